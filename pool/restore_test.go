package pool

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/api"
)

// TestPoolOfRestoredTestGuests keeps a pool of `ember vmm --restore` VMMs
// of one test-guest snapshot, per backend: claims (with and without
// resume, from the pool and cold) hand out distinct VMs whose guests
// compute their result from the snapshot's memory and registers and the
// identity given at claim time. Nothing is left running afterwards.
func TestPoolOfRestoredTestGuests(t *testing.T) {
	const mem, fill = 16, 20
	snap := filepath.Join(t.TempDir(), "snap")
	out, err := exec.Command(emberBin, "snapshot", "testguest", "--program", "identity",
		"--mem", fmt.Sprint(mem), "--ws-percent", fmt.Sprint(fill), snap).CombinedOutput()
	if err != nil {
		t.Fatalf("ember snapshot testguest: %v\n%s", err, out)
	}
	g, err := guestrun.NewIdentityGuest(mem<<20, fill)
	if err != nil {
		t.Fatal(err)
	}
	for _, backend := range []string{"copy", "mmap", "uffd", "prefetch"} {
		t.Run(backend, func(t *testing.T) {
			run := filepath.Join(t.TempDir(), "run")
			m, err := New(Config{
				Ember: emberBin, RunDir: run,
				Profiles: []Profile{{Name: "r", Size: 2, MemoryMiB: mem,
					VMMArgs: []string{"--restore", snap, "--backend", backend}}},
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				m.Close()
				// Claimed VMMs exit shortly after their guest ended and
				// /wait was answered; Close ended the others.
				deadline := time.Now().Add(10 * time.Second)
				for len(vmmPIDs(t, run)) > 0 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if pids := vmmPIDs(t, run); len(pids) != 0 {
					t.Errorf("VMM processes left: %v", pids)
				}
			}()
			waitReady(t, m, 2)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// Three claims at once from a pool of two: two from the pool,
			// one cold; the second is resumed by its claimer.
			claims := make([]*Claim, 3)
			errs := make([]error, 3)
			var wg sync.WaitGroup
			for i := range claims {
				wg.Go(func() { claims[i], errs[i] = m.Claim(ctx, "r", ClaimOptions{Resume: i != 1}) })
			}
			wg.Wait()
			sources := map[string]int{}
			for i, c := range claims {
				if errs[i] != nil {
					t.Fatalf("claim %d: %v", i, errs[i])
				}
				sources[c.Source]++
				cl := api.NewClient(c.Socket)
				if i == 1 {
					if err := cl.Action(ctx, api.ActionResume); err != nil {
						t.Fatal(err)
					}
				}
				ei, err := cl.Wait(ctx)
				cl.Close()
				if err != nil {
					t.Fatal(err)
				}
				if ei.Error != "" {
					t.Fatalf("claimed VM %d: %s", i, ei.Error)
				}
				if err := g.Check(ei.Reports, c.Identity.Nonce); err != nil {
					t.Fatalf("claimed VM %d (%s): %v", i, c.Source, err)
				}
			}
			if sources["pool"] < 1 || sources["pool"]+sources["cold"] != 3 {
				t.Errorf("claims came from %v", sources)
			}
		})
	}
}
