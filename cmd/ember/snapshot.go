package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	snapshotbench "github.com/embervm/ember/benchmarks/snapshot"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/kvm"
)

func init() {
	register(&command{
		name:    "snapshot",
		summary: "create, inspect and merge snapshots (create --config F --out DIR | merge BASE DIFF OUT | inspect DIR | testguest [--program workingset|identity] DIR)",
		run:     runSnapshot,
	})
}

func runSnapshot(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return &exitError{code: 2, err: fmt.Errorf("usage: ember snapshot create --config F --out DIR [flags] | merge BASE DIFF OUT | inspect DIR | testguest [--program workingset|identity] [flags] DIR")}
	}
	switch args[0] {
	case "merge":
		return snapshotMerge(ctx, args[1:])
	case "inspect":
		return snapshotInspect(args[1:])
	case "testguest":
		return snapshotTestGuest(ctx, args[1:])
	case "create":
		return snapshotCreate(ctx, args[1:])
	}
	return &exitError{code: 2, err: fmt.Errorf("unknown snapshot subcommand %q", args[0])}
}

func snapshotMerge(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot merge", "BASE DIFF OUT")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		fs.Usage()
		return &exitError{code: 2}
	}
	st, err := snapshot.Merge(ctx, fs.Arg(0), fs.Arg(1), fs.Arg(2))
	if err != nil {
		return err
	}
	fmt.Printf("merged %s into full snapshot %s in %s\n", fs.Arg(1), st.ID, fs.Arg(2))
	return nil
}

func snapshotInspect(args []string) error {
	fs := newFlagSet("snapshot inspect", "DIR")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2}
	}
	s, err := snapshot.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	st := s.State
	fmt.Printf("id        %s\nkind      %s\nparent    %s\ncreated   %s\ncpu       %s family %d (signature %#x)\nvcpus     %d\nmemory    %s (%d MiB)\n",
		st.ID, st.Kind, st.Parent, st.Created.Format(time.RFC3339), st.CPU.Vendor, st.CPU.Family(), st.CPU.Signature,
		len(st.Machine.CPUs), st.MemoryFile, st.MemorySize()>>20)
	for _, c := range st.Machine.CPUs {
		fmt.Printf("vcpu %d    %d CPUID entries, %d MSRs, TSC %d kHz, RIP %#x\n", c.ID, len(c.CPUID), len(c.MSRs), c.TSCKHz, c.Regs.RIP)
	}
	for i, r := range st.Regions {
		fmt.Printf("region %d  gpa %#x size %#x file offset %#x\n", i, r.GPA, r.Size, r.FileOffset)
	}
	if st.Kind == snapshot.KindDiff {
		var n uint64
		for _, x := range st.Dirty {
			n += x.Length
		}
		fmt.Printf("dirty     %d extents, %d pages\n", len(st.Dirty), n/4096)
	}
	for _, d := range st.Devices {
		fmt.Printf("device    %s v%d (%d bytes)\n", d.Name, d.Version, len(d.Data))
	}
	if ws, err := snapshot.ReadWorkingSet(s); err == nil {
		fmt.Printf("workset   %d pages in %d runs\n", ws.Pages(), len(ws.Runs))
	}
	return nil
}

// snapshotTestGuest snapshots a test guest at its gate. The working-set
// guest has filled its memory and, once restored, touches ws-percent of
// it; the identity guest has filled ws-percent of its memory and, once
// restored, waits for an identity (ember vmm --restore, the warm pool)
// before it sums that memory.
func snapshotTestGuest(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot testguest", "DIR")
	program := fs.String("program", "workingset", "guest to snapshot: workingset (for ember restore), or identity (waits for an identity: for ember vmm --restore and pool profiles)")
	memMiB := fs.Uint64("mem", 128, "guest memory in MiB")
	wsPct := fs.Float64("ws-percent", 12.5, "share of memory the restored guest touches")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2}
	}
	var spec guestrun.Spec
	var about string
	switch *program {
	case "workingset":
		ws, pages, err := snapshotbench.WorkingSetSpec(*memMiB<<20, *wsPct)
		if err != nil {
			return err
		}
		spec, about = ws.Spec, fmt.Sprintf("working set %d pages; it reports %#x", pages, ws.Expected)
	case "identity":
		g, err := guestrun.NewIdentityGuest(*memMiB<<20, *wsPct)
		if err != nil {
			return err
		}
		spec, about = g.Spec, fmt.Sprintf("waits for an identity; then reports it and %#x twice",
			guestrun.ExpectedIdentitySum(g.Start, g.End))
	default:
		return &exitError{code: 2, err: fmt.Errorf("unknown test-guest program %q (have workingset, identity)", *program)}
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	st, err := guestrun.Create(ctx, sys, fs.Arg(0), spec)
	if err != nil {
		return err
	}
	fmt.Printf("snapshot %s of a %d MiB %s test guest (%s) in %s\n",
		st.ID, *memMiB, *program, about, fs.Arg(0))
	return nil
}

// snapshotCreate boots a Linux VM from a JSON boot configuration, waits
// until it is ready (its boot marker, a console line, or both), pauses it
// and writes a full snapshot.
func snapshotCreate(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot create", "")
	cfgPath := fs.String("config", "", "boot configuration (JSON, as for ember vmm --config) (required)")
	out := fs.String("out", "", "snapshot directory to write (required)")
	waitMarker := fs.Bool("wait-for-marker", false, "wait for the guest's boot marker (its init started)")
	waitFor := fs.String("wait-for", "", "wait until the console prints this text")
	settle := fs.Duration("settle", 0, "after the guest is ready, let it run this much longer before pausing")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up if the guest is not ready by then")
	consolePath := fs.String("console", "", "append the guest's console to this file (default: discard)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cfgPath == "" || *out == "" || fs.NArg() != 0 {
		fs.Usage()
		return &exitError{code: 2}
	}
	t0 := time.Now()
	cfg, err := boot.ReadConfig(*cfgPath)
	if err != nil {
		return err
	}
	var sinks []io.Writer
	if *consolePath != "" {
		f, err := os.OpenFile(*consolePath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		sinks = append(sinks, f)
	}
	var watch *consoleWatch
	if *waitFor != "" {
		watch = newConsoleWatch(*waitFor)
		sinks = append(sinks, watch)
	}
	cfg.Console = io.MultiWriter(sinks...)
	marked := make(chan struct{})
	var markOnce sync.Once
	cfg.OnMark = func(uint8, time.Duration) { markOnce.Do(func() { close(marked) }) }
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	vm, err := boot.Build(ctx, sys, cfg, nil)
	if err != nil {
		return err
	}
	defer vm.Close()
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if err := vm.Start(wctx); err != nil {
		return err
	}
	wait := func(what string, ch <-chan struct{}) error {
		select {
		case <-ch:
			return nil
		case <-vm.Done():
			res, _ := vm.Wait(context.Background())
			return fmt.Errorf("the VM ended before %s: %+v", what, res)
		case <-wctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, wctx.Err())
		}
	}
	if *waitMarker {
		if err := wait("the boot marker", marked); err != nil {
			return err
		}
	}
	if watch != nil {
		if err := wait(fmt.Sprintf("console text %q", *waitFor), watch.found); err != nil {
			return err
		}
	}
	ready := time.Since(t0)
	if *settle > 0 {
		time.Sleep(*settle)
	}
	if err := vm.Pause(wctx); err != nil {
		return err
	}
	st, stats, err := vm.Snapshot(wctx, *out, boot.SnapshotOptions{})
	if err != nil {
		return err
	}
	var initAt time.Duration // VM start to the boot marker (/init running)
	if mk := vm.Marks(); len(mk) > 0 {
		initAt = mk[0].Elapsed
	}
	res := map[string]any{
		"id": st.ID.String(), "dir": *out, "ready_ns": ready, "init_ns": initAt, "save_ns": stats.Elapsed,
		"pages_written": stats.PagesWritten, "zero_pages": stats.PagesSkipped, "devices": len(st.Devices),
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(res)
	}
	fmt.Printf("snapshot %s of a Linux VM in %s: ready %v after process start, saved in %v (%d pages, %d zero pages skipped, %d device states)\n",
		st.ID, *out, ready.Round(time.Millisecond), stats.Elapsed.Round(time.Millisecond), stats.PagesWritten, stats.PagesSkipped, len(st.Devices))
	return nil
}

// consoleWatch is a console sink that closes found once the text appears
// (also across writes).
type consoleWatch struct {
	mu    sync.Mutex
	want  []byte
	tail  []byte
	found chan struct{}
	done  bool
}

func newConsoleWatch(text string) *consoleWatch {
	return &consoleWatch{want: []byte(text), found: make(chan struct{})}
}

func (w *consoleWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.tail = append(w.tail, p...)
	if bytes.Contains(w.tail, w.want) {
		w.done = true
		close(w.found)
		w.tail = nil
		return len(p), nil
	}
	if keep := len(w.want) - 1; len(w.tail) > keep {
		w.tail = append(w.tail[:0], w.tail[len(w.tail)-keep:]...)
	}
	return len(p), nil
}
