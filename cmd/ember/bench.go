package main

import (
	"context"
	"fmt"
	"os"
	"strconv"

	"github.com/embervm/ember/benchmarks/poolbench"
	snapshotbench "github.com/embervm/ember/benchmarks/snapshot"
	"github.com/embervm/ember/benchmarks/vmcore"
	"github.com/embervm/ember/snapshot"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "run a benchmark suite and print a markdown table (suites: core, snapshot, pool: warm pool vs cold restore of one snapshot)",
		run:     runBench,
	})
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlagSet("bench", "SUITE")
	runs := fs.Int("runs", 30, "runs per measurement")
	poolBackend := fs.String("backend", "prefetch", "pool: restore backend of the pooled and the cold VMMs")
	poolMem := fs.Uint64("mem", 64, "pool: guest memory in MiB")
	baseline := fs.String("baseline", "", "pool: also measure the pool of this ember binary (an earlier version), in the same run")
	var conc []int
	fs.Func("concurrency", "pool: a concurrency level to measure (repeat; default 1 and 8)", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("want a positive number, not %q", s)
		}
		conc = append(conc, n)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	suite := "core"
	if fs.NArg() > 0 {
		suite = fs.Arg(0)
	}
	switch suite {
	case "core":
		return vmcore.Report(ctx, os.Stdout, *runs)
	case "snapshot":
		rep, err := snapshotbench.Run(ctx, snapshotbench.Options{Runs: *runs})
		if err != nil {
			return err
		}
		rep.WriteMarkdown(os.Stdout, "ember bench --runs "+fmt.Sprint(*runs)+" snapshot")
		return nil
	case "pool":
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		backend, err := snapshot.ParseBackend(*poolBackend)
		if err != nil {
			return err
		}
		rep, err := poolbench.Run(ctx, poolbench.Options{
			Ember: exe, Backend: backend, MemoryMiB: *poolMem, Runs: *runs, Concurrency: conc, Baseline: *baseline,
		})
		if err != nil {
			return err
		}
		rep.WriteMarkdown(os.Stdout)
		return nil
	}
	return fmt.Errorf("unknown suite %q (have: core, snapshot, pool)", suite)
}
