package pool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embervm/ember/internal/fixtures"
)

// TestPoolOfLeanVMMs: ember-vmm runs a pool's VMMs as ember does (the pool
// runs `EMBER vmm ARGS`), lease and claim included.
func TestPoolOfLeanVMMs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lean := filepath.Join(t.TempDir(), "ember-vmm")
	if err := fixtures.GoBuild(ctx, "./cmd/ember-vmm", lean); err != nil {
		t.Fatal(err)
	}
	m, _ := newPoolOf(t, lean, 1, 0)
	waitReady(t, m, 1)
	c, err := m.Claim(ctx, "tg", ClaimOptions{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.PID)); err != nil || exe != lean {
		t.Errorf("claimed VMM %d runs %q (%v), want %s", c.PID, exe, err, lean)
	}
	if err := finish(ctx, c, true); err != nil {
		t.Fatal(err)
	}
}
