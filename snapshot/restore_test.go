package snapshot_test

import (
	"context"
	"testing"
	"time"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/kvm"
)

// TestRestoreMidComputationEachBackend snapshots a guest in the middle of
// read-modify-write passes over 256 MiB and restores it in a fresh process
// with every backend; each must finish with the uninterrupted result. The
// mmap restore must leave the snapshot files byte for byte unchanged.
func TestRestoreMidComputationEachBackend(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec, want := mixSpec(t, 256<<20, 24, 50*time.Millisecond)
	// Pause in pass 3 or later: every page holds data by then.
	spec.Until = func(r kvm.Regs) bool { return r.R11 >= 3 && r.R11 < 24 }
	dir := t.TempDir()
	src, err := guestrun.Start(ctx, sys, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.PauseWhenReady(ctx, spec); err != nil {
		t.Fatal(err)
	}
	st, stats, err := src.Save(ctx, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Machine.CPUs[0].Regs; r.R11 < 3 || r.R11 > 24 || r.RCX == 0 {
		t.Fatalf("snapshot not mid-computation: pass %d, %d words left", r.R11, r.RCX)
	}
	t.Logf("saved in pass %d with %d words left: %d pages written, %d zero pages skipped, %v",
		st.Machine.CPUs[0].Regs.R11, st.Machine.CPUs[0].Regs.RCX, stats.PagesWritten, stats.PagesSkipped, stats.Elapsed)
	src.Close()

	sum := dirSum(t, dir)
	for _, tt := range []struct {
		name    string
		backend snapshot.Backend
		check   func(t *testing.T, r *guestrun.Result)
	}{
		{"copy", snapshot.BackendCopy, nil},
		{"mmap", snapshot.BackendMmap, func(t *testing.T, r *guestrun.Result) {
			if dirSum(t, dir) != sum {
				t.Error("the mmap restore modified the snapshot files")
			}
		}},
		{"uffd recording", snapshot.BackendUFFD, func(t *testing.T, r *guestrun.Result) {
			if r.Stats.FaultsServed == 0 || r.Stats.BytesRead == 0 || r.WorkingSetPages == 0 {
				t.Errorf("uffd served or recorded nothing: %+v", r)
			}
		}},
		{"prefetch installing", snapshot.BackendPrefetch, func(t *testing.T, r *guestrun.Result) {
			if r.Stats.PagesPrefetched == 0 {
				t.Errorf("nothing prefetched: %+v", r.Stats)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := spawn(t, ctx, guestrun.Request{Dir: dir, Backend: tt.backend, Record: true, SaveWorkingSet: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Reports) != 1 || r.Reports[0] != want || r.ExitCode != 0 {
				t.Fatalf("restored guest reported %#x (exit %d), uninterrupted run gives %#x", r.Reports, r.ExitCode, want)
			}
			t.Logf("first instruction %v after process start (%v after Open), ran %v; faults %d, read %d MiB, zero-filled %d, prefetched %d, RSS %d MiB",
				r.FromProcessStart, r.FromRestoreStart, r.Run, r.Stats.FaultsServed, r.Stats.BytesRead>>20,
				r.Stats.PagesZeroFilled, r.Stats.PagesPrefetched, r.RSSKiB>>10)
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

// TestUninterruptedMatchesExpected checks ExpectedMix against a real run,
// so the restore tests compare against what the guest really computes.
func TestUninterruptedMatchesExpected(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec, want := mixSpec(t, 8<<20, 3, 0)
	src, err := guestrun.Start(ctx, sys, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	res, err := src.Wait(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reports) != 1 || res.Reports[0] != want {
		t.Fatalf("uninterrupted guest reported %#x, ExpectedMix says %#x", res.Reports, want)
	}
}

// TestRestoreManyTimes restores one snapshot repeatedly, in fresh
// processes, cycling through the backends.
func TestRestoreManyTimes(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec, want := mixSpec(t, 16<<20, 400, 20*time.Millisecond)
	dir := t.TempDir()
	if _, err := guestrun.Create(ctx, sys, dir, spec); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		b := snapshot.Backends[i%len(snapshot.Backends)]
		r, err := spawn(t, ctx, guestrun.Request{Dir: dir, Backend: b, SaveWorkingSet: true})
		if err != nil {
			t.Fatalf("restore %d (%s): %v", i, b, err)
		}
		if len(r.Reports) != 1 || r.Reports[0] != want {
			t.Fatalf("restore %d (%s) reported %#x, want %#x", i, b, r.Reports, want)
		}
	}
}
