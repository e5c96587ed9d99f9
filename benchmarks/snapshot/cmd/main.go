// Command snapshotbench runs the snapshot restore benchmark and writes its
// table into docs/benchmarks.md. Run as `snapshotbench restore` with a
// request in the environment, it is the restore child.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	snapshotbench "github.com/embervm/ember/benchmarks/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
)

func main() {
	if handled, status := guestrun.ChildMain(); handled {
		os.Exit(status)
	}
	runs := flag.Int("runs", 15, "restores per size and backend")
	ws := flag.Float64("ws-percent", 10, "working set, percent of guest memory")
	doc := flag.String("doc", "docs/benchmarks.md", "markdown file to update (empty: stdout only)")
	sizes := flag.String("sizes", "128,512,1024", "guest sizes in MiB")
	flag.Parse()
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	var sz []uint64
	for _, s := range strings.Split(*sizes, ",") {
		var v uint64
		if _, err := fmt.Sscan(s, &v); err != nil {
			fmt.Fprintf(os.Stderr, "bad size %q\n", s)
			os.Exit(2)
		}
		sz = append(sz, v)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rep, err := snapshotbench.Run(ctx, snapshotbench.Options{
		SizesMiB: sz, WorkingSetPercent: *ws, Runs: *runs, RestoreCommand: []string{exe, "restore"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "snapshotbench:", err)
		os.Exit(1)
	}
	var buf bytes.Buffer
	rep.WriteMarkdown(&buf, "go run ./benchmarks/snapshot/cmd "+strings.Join(os.Args[1:], " "))
	os.Stdout.Write(buf.Bytes())
	if *doc != "" {
		if err := snapshotbench.UpdateDoc(*doc, buf.String()); err != nil {
			fmt.Fprintln(os.Stderr, "snapshotbench:", err)
			os.Exit(1)
		}
	}
}
