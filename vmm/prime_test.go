package vmm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/embervm/ember/vmm"
)

// TestPrime: priming enters KVM_RUN without running a guest instruction
// (registers and exit count unchanged), leaves the kick signal working
// (pause and stop still interrupt the guest), and is refused while the
// vCPU runs.
func TestPrime(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := countGuest(t, ctx, sys, false)
	c := g.VCPUs()[0]
	before := regs(t, ctx, c)
	for i := 0; i < 3; i++ { // again and again: nothing accumulates
		if err := g.Prime(ctx); err != nil {
			t.Fatal(err)
		}
	}
	after := regs(t, ctx, c)
	if after != before || c.Exits() != 0 {
		t.Fatalf("priming changed the vCPU: regs %+v -> %+v, %d exits", before, after, c.Exits())
	}
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := c.Prime(ctx); !errors.Is(err, vmm.ErrRunning) {
		t.Fatalf("Prime of a running vCPU: %v, want ErrRunning", err)
	}
	pauseCtx, pcancel := context.WithTimeout(ctx, 5*time.Second)
	defer pcancel()
	if err := g.Pause(pauseCtx); err != nil {
		t.Fatalf("pause after priming (is the kick signal still unblocked?): %v", err)
	}
	if r := regs(t, ctx, c); r.RCX == before.RCX {
		t.Fatal("the guest did not run after priming")
	}
	if err := g.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}
