package snapshot_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	tg "github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
)

// slackPages bounds the pages a working-set guest touches besides its
// working set: code, stack, GDT, TSS and page tables.
const slackPages = 16

// TestUFFDReadsOnlyWorkingSet restores a guest whose memory is all data
// but which touches only 1/8 of it, and checks that uffd and prefetch read
// nothing beyond the pages it touched, and that prefetch installs the
// recorded set instead of faulting.
func TestUFFDReadsOnlyWorkingSet(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// 64 MiB; 16 blocks of 32 pages, 1 MiB apart: 512 pages (2 MiB).
	g := newWSGuest(t, 64<<20, 16, 32, 1<<20)
	dir := t.TempDir()
	if _, err := guestrun.Create(ctx, sys, dir, g.spec); err != nil {
		t.Fatal(err)
	}
	limit := (g.pages + slackPages) * 4096
	for _, tt := range []struct {
		name    string
		backend snapshot.Backend
		check   func(t *testing.T, r *guestrun.Result)
	}{
		{"uffd", snapshot.BackendUFFD, nil},
		{"prefetch recording", snapshot.BackendPrefetch, func(t *testing.T, r *guestrun.Result) {
			if r.WorkingSetPages < g.pages || r.WorkingSetPages > g.pages+slackPages {
				t.Errorf("recorded %d pages, guest touched %d (+ up to %d)", r.WorkingSetPages, g.pages, slackPages)
			}
		}},
		{"prefetch installing", snapshot.BackendPrefetch, func(t *testing.T, r *guestrun.Result) {
			if r.Stats.PagesPrefetched < g.pages/2 || r.Stats.WorkingSetPages == 0 {
				t.Errorf("prefetched %d of %d pages", r.Stats.PagesPrefetched, r.Stats.WorkingSetPages)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := spawn(t, ctx, guestrun.Request{Dir: dir, Backend: tt.backend, SaveWorkingSet: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Reports) != 1 || r.Reports[0] != g.want {
				t.Fatalf("reported %#x, want %#x", r.Reports, g.want)
			}
			t.Logf("read %d KiB for a %d KiB working set; %d faults, %d prefetched; ran %v",
				r.Stats.BytesRead>>10, g.pages*4, r.Stats.FaultsServed, r.Stats.PagesPrefetched, r.Run)
			if r.Stats.BytesRead > limit || r.Stats.BytesRead < g.pages*4096 {
				t.Errorf("read %d bytes; the working set is %d bytes (+ %d pages of slack)", r.Stats.BytesRead, g.pages*4096, slackPages)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

// TestHandlerFailureStopsGuest makes the fault handler fail (the memory
// file shrinks under it) and checks the guest is stopped with a clear
// error instead of hanging on a fault.
func TestHandlerFailureStopsGuest(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := newWSGuest(t, 16<<20, 4, 16, 1<<20)
	dir := t.TempDir()
	if _, err := guestrun.Create(ctx, sys, dir, g.spec); err != nil {
		t.Fatal(err)
	}
	snap := mustOpen(t, dir)
	mem, err := snapshot.OpenMemory(ctx, snap, snapshot.MemoryOptions{Backend: snapshot.BackendUFFD})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	guest, err := tg.NewMachine(ctx, sys, tg.NewImage([]byte{0x90}, mem.Guest().Size()), tg.Options{Memory: mem.Guest()}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer guest.Close()
	gate := &guestrun.Gate{}
	gate.Open()
	if err := guest.PIO().Insert(gate, guestrun.GatePort, 4); err != nil {
		t.Fatal(err)
	}
	if err := snapshot.Restore(ctx, guest.Machine, snap); err != nil {
		t.Fatal(err)
	}
	// Every page the guest needs now reads past the end of the file.
	if err := os.Truncate(snap.MemoryPath(), 0); err != nil {
		t.Fatal(err)
	}
	mem.Attach(guest.Machine)
	if err := guest.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if _, err := guest.Machine.Wait(ctx); err != nil {
		t.Fatalf("guest still running after the handler failed: %v", err)
	}
	if err := mem.Err(); !errors.Is(err, snapshot.ErrHandler) {
		t.Fatalf("Memory.Err = %v, want ErrHandler", err)
	}
	t.Logf("guest stopped %v after start; handler error: %v", time.Since(t0), mem.Err())
}
