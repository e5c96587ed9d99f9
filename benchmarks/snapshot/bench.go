// Package snapshotbench measures snapshot restore with each memory backend:
// for test guests of several sizes that touch a working set of part of
// their memory after the restore, the time from process start (and from
// opening the snapshot) to the first guest instruction, the time to touch
// the working set, faults served, bytes read and the restored process's
// RSS. Each restore runs in a fresh process.
package snapshotbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	tg "github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/kvm"
)

// Options configure Run.
type Options struct {
	// SizesMiB are the guest memory sizes (default 128, 512, 1024).
	SizesMiB []uint64
	// WorkingSetPercent is the share of memory the guest touches after the
	// restore (default 10).
	WorkingSetPercent float64
	// Runs per size and backend (default 15).
	Runs int
	// Backends to measure (default all).
	Backends []snapshot.Backend
	// RestoreCommand runs one restore in a fresh process: an executable
	// whose argv handles guestrun.RequestEnv (`ember restore`, or this
	// package's cmd). Default: the running executable with "restore".
	RestoreCommand []string
	// Dir holds the snapshots (default a temporary directory, removed).
	Dir string
	// Logger for progress; nil means slog.Default().
	Logger *slog.Logger
}

// slackPages bounds the pages a guest touches outside its working set
// (code, stack, descriptor tables, page tables).
const slackPages = 16

// Sample is one restore.
type Sample = guestrun.Result

// Cell is the runs of one backend at one size.
type Cell struct {
	SizeMiB         uint64
	Backend         snapshot.Backend
	WorkingSetPages uint64
	Samples         []*Sample
}

// Report is the whole benchmark.
type Report struct {
	Options Options
	Host    string
	Cells   []*Cell
	Elapsed time.Duration
}

func (o *Options) defaults() error {
	if len(o.SizesMiB) == 0 {
		o.SizesMiB = []uint64{128, 512, 1024}
	}
	if o.WorkingSetPercent == 0 {
		o.WorkingSetPercent = 10
	}
	if o.Runs == 0 {
		o.Runs = 15
	}
	if len(o.Backends) == 0 {
		o.Backends = snapshot.Backends
	}
	if len(o.RestoreCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		o.RestoreCommand = []string{exe, "restore"}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Run creates a snapshot per size, records its working set once with the
// prefetch backend, then restores it Runs times per backend (backends
// interleaved) in fresh processes. The memory files are in the page cache
// (just written): the figures are for a warm cache.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	dir := opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "ember-snapbench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	sys, err := kvm.Open()
	if err != nil {
		return nil, err
	}
	defer sys.Close()
	rep := &Report{Options: opts, Host: hostDescription()}
	for _, size := range opts.SizesMiB {
		cells, err := runSize(ctx, sys, opts, filepath.Join(dir, fmt.Sprintf("%dm", size)), size)
		if err != nil {
			return nil, fmt.Errorf("%d MiB: %w", size, err)
		}
		rep.Cells = append(rep.Cells, cells...)
	}
	rep.Elapsed = time.Since(t0)
	return rep, nil
}

func runSize(ctx context.Context, sys *kvm.System, opts Options, dir string, size uint64) ([]*Cell, error) {
	log := opts.Logger
	spec, wsPages, err := WorkingSetSpec(size<<20, opts.WorkingSetPercent)
	if err != nil {
		return nil, err
	}
	if _, err := guestrun.Create(ctx, sys, dir, spec.Spec); err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	want := spec.Expected
	// The first prefetch restore records the working set.
	r, err := guestrun.Spawn(ctx, opts.RestoreCommand, guestrun.Request{Dir: dir, Backend: snapshot.BackendPrefetch, SaveWorkingSet: true})
	if err != nil {
		return nil, fmt.Errorf("recording the working set: %w", err)
	}
	log.Info("snapshot ready", "size_mib", size, "working_set_pages", wsPages, "recorded_pages", r.WorkingSetPages)
	cells := make([]*Cell, len(opts.Backends))
	for i, b := range opts.Backends {
		cells[i] = &Cell{SizeMiB: size, Backend: b, WorkingSetPages: wsPages}
	}
	for run := 0; run < opts.Runs; run++ {
		for i, b := range opts.Backends {
			s, err := guestrun.Spawn(ctx, opts.RestoreCommand, guestrun.Request{Dir: dir, Backend: b})
			if err != nil {
				return nil, fmt.Errorf("%s run %d: %w", b, run, err)
			}
			if len(s.Reports) != 1 || s.Reports[0] != want {
				return nil, fmt.Errorf("%s run %d: guest reported %#x, want %#x", b, run, s.Reports, want)
			}
			cells[i].Samples = append(cells[i].Samples, s)
		}
		log.Debug("run done", "size_mib", size, "run", run)
	}
	return cells, nil
}

// Spec is a working-set guest with its expected result.
type Spec struct {
	guestrun.Spec
	Expected uint64
}

// WorkingSetSpec lays out a guest of mem bytes whose working set is pct
// percent of it, as 64 KiB blocks spread evenly over its data area. It
// returns the spec and the working set's size in pages.
func WorkingSetSpec(mem uint64, pct float64) (Spec, uint64, error) {
	const blockPages = 16
	if pct <= 0 || pct > 100 || mem <= tg.DataBase {
		return Spec{}, 0, errors.New("snapshotbench: working set must be in (0, 100] percent of a guest above 2 MiB")
	}
	blocks := uint64(float64(mem) * pct / 100 / (blockPages * 4096))
	stride := (mem - tg.DataBase) / max(blocks, 1) &^ 4095
	if blocks == 0 || stride < blockPages*4096 {
		return Spec{}, 0, fmt.Errorf("snapshotbench: a %.1f%% working set does not fit %d MiB", pct, mem>>20)
	}
	code, err := guestrun.WorkingSetProgram(tg.DataBase, mem, blocks, blockPages, stride)
	if err != nil {
		return Spec{}, 0, err
	}
	return Spec{
		Spec:     guestrun.Spec{Code: code, Memory: mem},
		Expected: guestrun.ExpectedWorkingSet(tg.DataBase, blocks, blockPages, stride),
	}, blocks * blockPages, nil
}

func hostDescription() string {
	name, _ := os.Hostname()
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range splitLines(string(b)) {
			if len(line) > 10 && line[:10] == "model name" {
				if i := indexByte(line, ':'); i >= 0 {
					cpu = line[i+2:]
				}
				break
			}
		}
	}
	var uts [65]byte
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		copy(uts[:], b)
	}
	return fmt.Sprintf("%s: %s, %d CPUs, Linux %s", name, cpu, numCPU(), trimNL(string(uts[:])))
}
