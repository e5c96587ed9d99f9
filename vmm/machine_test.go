package vmm_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/kvm"
)

func openKVM(t testing.TB) *kvm.System {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

// countN is long enough (seconds of native CPL3 execution) that pauses and
// saves land mid-loop.
const countN = 3_000_000_000

func countGuest(t *testing.T, ctx context.Context, sys *kvm.System, skipLoad bool) *testguest.Guest {
	t.Helper()
	code, err := testguest.CountProgram(countN)
	if err != nil {
		t.Fatal(err)
	}
	g, err := testguest.NewMachine(ctx, sys, testguest.NewImage(code, 8<<20), testguest.Options{}, skipLoad)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func regs(t *testing.T, ctx context.Context, c *vmm.VCPU) kvm.Regs {
	t.Helper()
	var r kvm.Regs
	if err := c.Do(ctx, func(fd *kvm.VCPU) (err error) { r, err = fd.GetRegs(); return }); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPauseResumeMidLoop(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := countGuest(t, ctx, sys, false)
	c := g.VCPUs()[0]
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := 0; i < 3; i++ {
		time.Sleep(20 * time.Millisecond)
		t0 := time.Now()
		if err := g.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		lat := time.Since(t0)
		if c.State() != vmm.VCPUPaused {
			t.Fatalf("state %v after Pause", c.State())
		}
		// A paused vCPU does not run: its counter stays put.
		r1 := regs(t, ctx, c)
		time.Sleep(10 * time.Millisecond)
		r2 := regs(t, ctx, c)
		if r1.RCX != r2.RCX {
			t.Fatalf("counter moved while paused: %d -> %d", r1.RCX, r2.RCX)
		}
		if r1.RCX <= last || r1.RCX >= countN {
			t.Fatalf("pause %d: counter %d, previous %d: not mid-loop and advancing", i, r1.RCX, last)
		}
		last = r1.RCX
		t.Logf("pause %d took %v; counter %d", i, lat, r1.RCX)
		if lat > 500*time.Millisecond {
			t.Errorf("pause took %v: the kick is not prompt", lat)
		}
		if err := g.Resume(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A running vCPU refuses to have its state read.
	if _, err := g.SaveState(ctx); !errors.Is(err, vmm.ErrRunning) {
		t.Fatalf("SaveState while running: %v, want ErrRunning", err)
	}
	if err := c.Do(ctx, func(*kvm.VCPU) error { return nil }); !errors.Is(err, vmm.ErrRunning) {
		t.Fatalf("Do while running: %v, want ErrRunning", err)
	}
	if err := g.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := g.Machine.Wait(ctx)
	if err != nil || res.Err != nil || res.Stop != nil {
		t.Fatalf("after Stop: %+v, %v; want a clean stop", res, err)
	}
}

// TestSaveRestoreIntoSecondVM saves every vCPU and VM state of a guest
// paused mid-computation, restores it into a fresh VM over a copy of its
// memory, and checks the second VM finishes with the right result while the
// first VM's memory is left alone.
func TestSaveRestoreIntoSecondVM(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := countGuest(t, ctx, sys, false)
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := a.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := a.SaveState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs := st.CPUs[0]
	if cs.Regs.RCX == 0 || cs.Regs.RCX >= countN {
		t.Fatalf("saved counter %d is not mid-loop", cs.Regs.RCX)
	}
	if len(cs.MSRs) == 0 || len(cs.CPUID) == 0 || cs.LAPIC == nil || cs.XSave == nil || len(st.VM.IRQChips) != 3 || st.VM.PIT == nil {
		t.Fatalf("incomplete state: %d MSRs, %d CPUID, irqchips %d", len(cs.MSRs), len(cs.CPUID), len(st.VM.IRQChips))
	}
	t.Logf("saved at counter %d with %d MSRs", cs.Regs.RCX, len(cs.MSRs))
	memA := a.Memory().Regions()[0].Host()
	snapshot := append([]byte(nil), memA...)

	b := countGuest(t, ctx, sys, true)
	copy(b.Memory().Regions()[0].Host(), snapshot)
	if err := b.RestoreState(ctx, st); err != nil {
		t.Fatal(err)
	}
	got := regs(t, ctx, b.VCPUs()[0])
	if got.RCX != cs.Regs.RCX || got.RAX != cs.Regs.RAX || got.RIP != cs.Regs.RIP {
		t.Fatalf("restored regs differ: %+v vs %+v", got, cs.Regs)
	}
	start := time.Now()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := b.Wait(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	wantSum := uint64(countN) * (countN + 1) / 2
	if len(res.Reports) != 2 || res.Reports[0] != wantSum || res.Reports[1] != countN {
		t.Fatalf("restored VM reported %v, want [%d %d]", res.Reports, wantSum, uint64(countN))
	}
	if v, _ := b.Memory().ReadUint64(testguest.DataBase); v != wantSum {
		t.Errorf("restored VM's running total in memory %d, want %d", v, wantSum)
	}
	if !equalBytes(a.Memory().Regions()[0].Host(), snapshot) {
		t.Error("the first VM's memory changed while the second ran")
	}
	t.Logf("restored VM finished in %v", res.Elapsed)
}

func equalBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRestoreMismatch(t *testing.T) {
	sys := openKVM(t)
	ctx := context.Background()
	a := countGuest(t, ctx, sys, false)
	st, err := a.SaveState(ctx) // never started: state is readable
	if err != nil {
		t.Fatal(err)
	}
	b := countGuest(t, ctx, sys, true)
	bad := *st
	bad.CPUs = append(bad.CPUs, bad.CPUs[0])
	if err := b.RestoreState(ctx, &bad); !errors.Is(err, vmm.ErrStateMismatch) {
		t.Errorf("2 vCPU state into 1 vCPU machine: %v", err)
	}
	bad = *st
	bad.VM.IRQChips = nil
	if err := b.RestoreState(ctx, &bad); !errors.Is(err, vmm.ErrStateMismatch) {
		t.Errorf("state without irqchip: %v", err)
	}
}

func TestStopBeforeStart(t *testing.T) {
	sys := openKVM(t)
	ctx := context.Background()
	g := countGuest(t, ctx, sys, false)
	if _, err := g.Machine.Wait(ctx); !errors.Is(err, vmm.ErrNotStarted) {
		t.Errorf("Wait before Start: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
}
