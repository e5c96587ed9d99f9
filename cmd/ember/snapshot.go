package main

import (
	"context"
	"fmt"
	"time"

	snapshotbench "github.com/embervm/ember/benchmarks/snapshot"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/kvm"
)

func init() {
	register(&command{
		name:    "snapshot",
		summary: "inspect, merge and create snapshots (merge BASE DIFF OUT | inspect DIR | testguest DIR)",
		run:     runSnapshot,
	})
}

func runSnapshot(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return &exitError{code: 2, err: fmt.Errorf("usage: ember snapshot merge BASE DIFF OUT | inspect DIR | testguest [flags] DIR")}
	}
	switch args[0] {
	case "merge":
		return snapshotMerge(ctx, args[1:])
	case "inspect":
		return snapshotInspect(args[1:])
	case "testguest":
		return snapshotTestGuest(ctx, args[1:])
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

// snapshotTestGuest snapshots a working-set test guest at its gate: the
// guest has filled its memory and, once restored, touches ws-percent of it.
func snapshotTestGuest(ctx context.Context, args []string) error {
	fs := newFlagSet("snapshot testguest", "DIR")
	memMiB := fs.Uint64("mem", 128, "guest memory in MiB")
	wsPct := fs.Float64("ws-percent", 12.5, "share of memory the restored guest touches")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return &exitError{code: 2}
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	spec, pages, err := snapshotbench.WorkingSetSpec(*memMiB<<20, *wsPct)
	if err != nil {
		return err
	}
	st, err := guestrun.Create(ctx, sys, fs.Arg(0), spec.Spec)
	if err != nil {
		return err
	}
	fmt.Printf("snapshot %s of a %d MiB test guest (working set %d pages; it reports %#x) in %s\n",
		st.ID, *memMiB, pages, spec.Expected, fs.Arg(0))
	return nil
}
