package vmmcmd

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/api"
)

// TestAgentIdentityWaitsWhilePaused: an identity set while the VM is
// paused (before its first run, or after a pause) is held for the next
// resume instead of going to an agent that cannot answer; while the VM
// runs it goes to the agent at once.
func TestAgentIdentityWaitsWhilePaused(t *testing.T) {
	nonce := strings.Repeat("ab", 16)
	tests := []struct {
		name    string
		steps   func(a *agentIdentity)
		reaches bool // Apply tries the agent now
	}{
		{"before the first run", func(a *agentIdentity) {}, false},
		{"while running", func(a *agentIdentity) { a.AfterResume(context.Background()) }, true},
		{"after a pause", func(a *agentIdentity) { a.AfterResume(context.Background()); a.AfterPause() }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// No agent listens here: reaching for it fails (by the deadline).
			a := &agentIdentity{uds: filepath.Join(t.TempDir(), "none.vsock")}
			tt.steps(a)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			err := a.Apply(ctx, api.Identity{ID: "vm1", Nonce: nonce})
			if reached := err != nil; reached != tt.reaches {
				t.Fatalf("Apply: %v; want the agent reached now: %v", err, tt.reaches)
			}
			if !tt.reaches && a.pending == nil {
				t.Fatal("the identity was not held for the resume")
			}
		})
	}
}
