package vmmcmd

import (
	"context"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	gapi "github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/client"
	"github.com/embervm/ember/vmm/api"
)

// agentIdentity applies a VMM's identity to a Linux guest through its agent
// (over the VM's vsock socket): the clock stepped to the present, the nonce
// mixed into the guest's RNG, and Ready with the VM's id as hostname. The
// agent can answer only while the VM runs, so an identity set on a paused
// VM (a pooled, restored VM at claim time) waits until the resume.
type agentIdentity struct {
	uds string

	mu      sync.Mutex
	running bool
	pending *api.Identity
}

// agentTimeout bounds the agent's answer to the identity requests.
const agentTimeout = 30 * time.Second

// Apply is the ApplyIdentity hook.
func (a *agentIdentity) Apply(ctx context.Context, id api.Identity) error {
	nonce, err := hex.DecodeString(id.Nonce)
	if err != nil || len(nonce) < 16 {
		return fmt.Errorf("%w: identity nonce must be at least 32 hex digits", api.ErrBadRequest)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.running {
		a.pending = &id
		return nil
	}
	return a.send(ctx, id, nonce)
}

// AfterPause is the AfterPause hook: the paused guest's agent cannot
// answer, so an identity set now waits for the next resume.
func (a *agentIdentity) AfterPause() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.running = false
}

// AfterResume is the AfterResume hook.
func (a *agentIdentity) AfterResume(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.running = true
	if a.pending == nil {
		return nil
	}
	id := *a.pending
	a.pending = nil
	nonce, _ := hex.DecodeString(id.Nonce)
	return a.send(ctx, id, nonce)
}

func (a *agentIdentity) send(ctx context.Context, id api.Identity, nonce []byte) error {
	ctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	c, err := client.Dial(ctx, a.uds, gapi.DefaultVsockPort)
	if err != nil {
		return fmt.Errorf("identity: reach the guest agent: %w", err)
	}
	defer c.Close()
	if _, err := c.SetTime(ctx, &gapi.SetTimeRequest{UnixNano: time.Now().UnixNano()}); err != nil {
		return fmt.Errorf("identity: set the guest clock: %w", err)
	}
	if _, err := c.AddEntropy(ctx, &gapi.AddEntropyRequest{Data: nonce}); err != nil {
		return fmt.Errorf("identity: add entropy: %w", err)
	}
	if _, err := c.Ready(ctx, &gapi.ReadyRequest{VmId: id.ID, Hostname: id.ID}); err != nil {
		return fmt.Errorf("identity: ready: %w", err)
	}
	return nil
}
