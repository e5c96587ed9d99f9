package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/kvm"
)

func init() {
	register(&command{
		name:    "restore",
		summary: "restore a snapshot (Linux or test guest) in this process and run it",
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
	timeout := fs.Duration("timeout", time.Minute, "how long the guest may run (Linux: 0, the default, means until it stops)")
	var lo linuxRestoreFlags
	fs.StringVar(&lo.console, "console", "", "Linux: append the guest's console to this file (default: standard output)")
	fs.Func("drive", "Linux: image path replacing the next saved drive's (repeat in drive order; empty keeps the saved path)", func(s string) error {
		lo.drives = append(lo.drives, s)
		return nil
	})
	fs.StringVar(&lo.vsockUDS, "vsock-uds", "", "Linux: Unix socket path for the vsock device (default: the saved one)")
	fs.Uint64Var(&lo.vsockCID, "vsock-cid", 0, "Linux: new guest CID (default: the saved one)")
	fs.BoolVar(&lo.prefetchFirst, "prefetch-first", false, "Linux, prefetch backend: install the working set before the vCPUs run")
	fs.Func("tap", "Linux: TAP name for the next saved network interface (repeat in order)", func(s string) error {
		lo.taps = append(lo.taps, s)
		return nil
	})
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
	snap, err := snapshot.Open(*dir)
	if err != nil {
		if *asJSON {
			json.NewEncoder(os.Stdout).Encode(guestrun.Result{Error: err.Error()})
		}
		return err
	}
	if boot.IsLinuxSnapshot(snap) {
		lo.timeoutSet = false
		fs.Visit(func(f *flag.Flag) { lo.timeoutSet = lo.timeoutSet || f.Name == "timeout" })
		lo.timeout, lo.record, lo.saveWS, lo.json = *timeout, *record, *saveWS, *asJSON
		return restoreLinux(ctx, snap, backend, lo)
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	res, err := guestrun.RestoreOpened(ctx, sys, snap, guestrun.Request{
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

// linuxRestoreFlags are ember restore's options for Linux snapshots.
type linuxRestoreFlags struct {
	console       string
	drives        []string
	vsockUDS      string
	vsockCID      uint64
	taps          []string
	timeout       time.Duration
	timeoutSet    bool
	record        bool
	saveWS        bool
	prefetchFirst bool
	json          bool
}

// linuxRestoreResult is what ember restore prints (stderr, or stdout as
// JSON with --json) when a restored Linux VM ends.
type linuxRestoreResult struct {
	Backend snapshot.Backend `json:"backend"`
	// Restore is snapshot open to a runnable VM (memory, KVM state,
	// devices).
	Restore time.Duration `json:"restore_ns"`
	// FromProcessStart is process start (the spawner's clock in
	// EMBER_SPAWN_NS, if set) to the vCPUs running.
	FromProcessStart time.Duration  `json:"from_process_start_ns"`
	Ran              time.Duration  `json:"ran_ns"`
	Stop             string         `json:"stop,omitempty"`
	Error            string         `json:"error,omitempty"`
	Stats            snapshot.Stats `json:"stats"`
	WorkingSetPages  uint64         `json:"working_set_pages,omitempty"`
}

// processStart approximates this process's start: the spawner's clock if
// it passed one, else when main's package initialised.
var processStart = time.Now()

func spawnTime() time.Time {
	if v, err := strconv.ParseInt(os.Getenv(guestrun.SpawnEnv), 10, 64); err == nil && v > 0 {
		return time.Unix(0, v)
	}
	return processStart
}

// restoreLinux restores a Linux snapshot in this process, its console on
// standard output (or --console) and standard input fed to its serial
// port, and runs it until it stops, the timeout passes or a signal comes.
// A recording restore (prefetch without a working set, or uffd --record)
// writes the working set when it ends.
func restoreLinux(ctx context.Context, snap *snapshot.Snapshot, backend snapshot.Backend, lo linuxRestoreFlags) error {
	var console io.Writer = os.Stdout
	if lo.console != "" {
		f, err := os.OpenFile(lo.console, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		console = f
	}
	opts := boot.RestoreOptions{
		Backend: backend, Record: lo.record, Console: console,
		DrivePaths: lo.drives, VsockUDS: lo.vsockUDS, VsockCID: lo.vsockCID,
		PrefetchBeforeStart: lo.prefetchFirst,
	}
	for _, t := range lo.taps {
		opts.Nets = append(opts.Nets, boot.NetInterface{TAP: t})
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	r, err := boot.RestoreFrom(ctx, sys, snap, opts)
	if err != nil {
		return err
	}
	defer r.Close()
	if lo.timeoutSet && lo.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lo.timeout)
		defer cancel()
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	first := time.Now()
	res := linuxRestoreResult{Backend: backend, Restore: r.Took, FromProcessStart: first.Sub(spawnTime())}
	fmt.Fprintf(os.Stderr, "ember: restored %s with %s in %v; vCPUs running %v after process start\n",
		snap.Dir, backend, r.Took.Round(time.Microsecond), res.FromProcessStart.Round(time.Microsecond))
	go r.PumpInput(ctx, os.Stdin)
	select {
	case <-r.Done():
	case <-ctx.Done():
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r.Stop(stopCtx)
		cancel()
	}
	res.Ran = time.Since(first)
	if out, err := r.Wait(context.Background()); err == nil {
		switch {
		case out.Err != nil:
			res.Error = out.Err.Error()
		case out.Stop != nil:
			res.Stop = out.Stop.Reason
		}
	}
	if err := r.Memory.Err(); err != nil {
		res.Error = err.Error()
	}
	res.Stats = r.Memory.Stats()
	if lo.saveWS && res.Stats.Recording && res.Error == "" {
		if res.WorkingSetPages, err = r.Memory.SaveWorkingSet(); err != nil {
			res.Error = err.Error()
		}
	}
	if lo.json {
		if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
			return err
		}
	} else {
		s := res.Stats
		fmt.Fprintf(os.Stderr, "ember: VM ran %v (%s); faults served %d, bytes read %d, pages zero-filled %d, prefetched %d (working set %d); working set saved: %d pages\n",
			res.Ran.Round(time.Millisecond), firstNonEmpty(res.Error, res.Stop, "stopped"), s.FaultsServed, s.BytesRead,
			s.PagesZeroFilled, s.PagesPrefetched, s.WorkingSetPages, res.WorkingSetPages)
	}
	if res.Error != "" {
		return errors.New(res.Error)
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
