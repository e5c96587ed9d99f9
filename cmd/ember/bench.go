package main

import (
	"context"
	"fmt"
	"os"

	"github.com/embervm/ember/benchmarks/poolbench"
	snapshotbench "github.com/embervm/ember/benchmarks/snapshot"
	"github.com/embervm/ember/benchmarks/vmcore"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "run a benchmark suite and print a markdown table (suites: core, snapshot, pool)",
		run:     runBench,
	})
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlagSet("bench", "SUITE")
	runs := fs.Int("runs", 30, "runs per measurement")
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
		rep, err := poolbench.Run(ctx, poolbench.Options{
			Ember: exe, VMMArgs: []string{"--testguest", "identity", "--mem", "64"}, MemoryMiB: 64,
			Runs: *runs, Concurrency: []int{1, 8},
		})
		if err != nil {
			return err
		}
		rep.WriteMarkdown(os.Stdout)
		return nil
	}
	return fmt.Errorf("unknown suite %q (have: core, snapshot, pool)", suite)
}
