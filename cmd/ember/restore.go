package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/kvm"
)

func init() {
	register(&command{
		name:    "restore",
		summary: "restore a test-guest snapshot in this process and run it to its exit",
		run:     runRestore,
	})
}

func runRestore(ctx context.Context, args []string) error {
	// A spawner (the snapshot benchmark) may pass its request in the
	// environment; the result then goes to stdout as JSON.
	if handled, status := guestrun.ChildMain(); handled {
		if status != 0 {
			return &exitError{code: status}
		}
		return nil
	}
	fs := newFlagSet("restore", "")
	dir := fs.String("snapshot", "", "snapshot directory")
	backendName := fs.String("backend", "mmap", "memory backend: copy, mmap, uffd or prefetch")
	record := fs.Bool("record", false, "with uffd: record the working set too")
	saveWS := fs.Bool("save-working-set", true, "write the recorded working set next to the snapshot (prefetch, or uffd with -record)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	timeout := fs.Duration("timeout", time.Minute, "how long the guest may run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		fs.Usage()
		return &exitError{code: 2}
	}
	backend, err := snapshot.ParseBackend(*backendName)
	if err != nil {
		return err
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	res, err := guestrun.Restore(ctx, sys, guestrun.Request{
		Dir: *dir, Backend: backend, Record: *record, SaveWorkingSet: *saveWS, Timeout: *timeout,
	}, nil)
	if *asJSON {
		if jerr := json.NewEncoder(os.Stdout).Encode(res); jerr != nil {
			return jerr
		}
		return err
	}
	if err != nil {
		return err
	}
	s := res.Stats
	fmt.Printf("guest exited %d, reported %#x\n", res.ExitCode, res.Reports)
	fmt.Printf("backend %s: first instruction %v after process start (%v after opening the snapshot); ran %v\n",
		s.Backend, res.FromProcessStart, res.FromRestoreStart, res.Run)
	fmt.Printf("faults served %d, bytes read %d, pages zero-filled %d, pages prefetched %d (working set %d), RSS %d KiB\n",
		s.FaultsServed, s.BytesRead, s.PagesZeroFilled, s.PagesPrefetched, s.WorkingSetPages, res.RSSKiB)
	if res.WorkingSetPages > 0 {
		fmt.Printf("working set of %d pages saved\n", res.WorkingSetPages)
	}
	return nil
}
