package main

import (
	"context"
	"fmt"
	"os"

	"github.com/embervm/ember/benchmarks/vmcore"
)

func init() {
	register(&command{
		name:    "bench",
		summary: "run a benchmark suite and print a markdown table (suites: core)",
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
	}
	return fmt.Errorf("unknown suite %q (have: core)", suite)
}
