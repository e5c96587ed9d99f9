// Command ctrbench times `ctr run --rm` through containerd with the ember
// shim against runc, or (-demo) runs one container in an ember microVM. On
// hosts whose KVM cannot boot Linux it runs itself inside the nested lab.
//
//	go run ./benchmarks/ctr/cmd -runs 20 -sources boot,restore,pool   # table into docs/benchmarks.md
//	go run ./benchmarks/ctr/cmd -demo             # what make demo shows
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	ctrbench "github.com/embervm/ember/benchmarks/ctr"
	"github.com/embervm/ember/benchmarks/internal/docsection"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
)

// reportPrefix starts the line that carries the report out of L1.
const reportPrefix = "ctrbench-report: "

// demoCommand is what the demo container runs.
var demoCommand = []string{"sh", "-c", "echo hello from a container in an ember microVM; echo kernel: $(cat /proc/version | cut -d' ' -f1-3); echo cpus: $(grep -c ^processor /proc/cpuinfo); id"}

func main() {
	runs := flag.Int("runs", 20, "containers per variant (after one warm-up each)")
	sources := flag.String("sources", "boot,restore,pool", "ember VM sources to time, comma-separated: boot, restore, pool")
	noRunc := flag.Bool("no-runc", false, "time only ember, not runc")
	demo := flag.Bool("demo", false, "run one container in an ember microVM and print its output")
	doc := flag.String("doc", "docs/benchmarks.md", "markdown file whose section to update (empty: stdout only)")
	inLab := flag.Bool("in-lab", false, "internal: this is the run inside L1")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *runs, strings.Split(*sources, ","), !*noRunc, *demo, *doc, *inLab); err != nil {
		fmt.Fprintln(os.Stderr, "ctrbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, runs int, sources []string, withRunc, demo bool, doc string, inLab bool) error {
	if inLab {
		return inner(ctx, ctrbench.LabPaths, runs, sources, withRunc, demo, os.Stdout)
	}
	if runs < 1 && !demo {
		return fmt.Errorf("-runs must be at least 1")
	}
	dir, err := os.MkdirTemp("", "ember-ctrbench-fixtures-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintln(os.Stderr, "ctrbench: preparing fixtures (the first time builds the guest kernel and containerd: minutes)")
	paths, files, err := ctrbench.Fixtures(ctx, dir, withRunc && !demo)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	where := "host KVM"
	if native, _ := labtest.NativeKVM(); native {
		if err := inner(ctx, paths, runs, sources, withRunc, demo, io.MultiWriter(os.Stdout, &out)); err != nil {
			return err
		}
	} else {
		where = "nested lab (TCG: compare the runtimes as a ratio)"
		if err := viaLab(ctx, paths, files, runs, sources, withRunc, demo, io.MultiWriter(filterReport(os.Stdout), &out)); err != nil {
			return err
		}
	}
	if demo {
		return nil
	}
	var rep ctrbench.Report
	for _, l := range strings.Split(out.String(), "\n") {
		if j, ok := strings.CutPrefix(l, reportPrefix); ok {
			if err := json.Unmarshal([]byte(j), &rep); err != nil {
				return fmt.Errorf("report: %w", err)
			}
		}
	}
	if rep.Samples == nil {
		return fmt.Errorf("no report came back")
	}
	host, _ := os.Hostname()
	var md bytes.Buffer
	rep.WriteMarkdown(&md, "go run ./benchmarks/ctr/cmd "+strings.Join(os.Args[1:], " "), where+" on "+host)
	os.Stdout.Write(md.Bytes())
	if doc != "" {
		return docsection.Update(doc, ctrbench.Heading, md.String())
	}
	return nil
}

// viaLab runs this program with -in-lab inside a fresh L1.
func viaLab(ctx context.Context, p ctrbench.Paths, files []lab.File, runs int, sources []string, withRunc, demo bool, out io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"/ctrbench/ctrbench", "-in-lab", fmt.Sprintf("-runs=%d", runs), "-sources=" + strings.Join(sources, ","),
		fmt.Sprintf("-no-runc=%v", !withRunc), fmt.Sprintf("-demo=%v", demo)}
	res, err := lab.Run(ctx, lab.Config{
		Args:      args,
		Files:     append(files, lab.File{HostPath: self, GuestPath: args[0]}),
		Ember:     p.Ember,
		Timeout:   time.Duration(runs+5) * time.Duration(len(sources)+1) * time.Minute,
		MemoryMiB: 3072,
		Stdout:    out,
		Stderr:    os.Stderr,
	})
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("the run in L1 failed (exit status %d)", res.ExitCode)
	}
	return nil
}

// inner is the run itself, where the KVM can boot Linux.
func inner(ctx context.Context, p ctrbench.Paths, runs int, sources []string, withRunc, demo bool, out io.Writer) error {
	if demo {
		return ctrbench.Demo(ctx, p, out, demoCommand...)
	}
	rep, err := ctrbench.Run(ctx, p, ctrbench.Options{Runs: runs, Sources: sources, Runc: withRunc, Log: os.Stderr})
	if err != nil {
		return err
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s%s\n", reportPrefix, b)
	return nil
}

// filterReport drops the report line from what is shown.
func filterReport(w io.Writer) io.Writer {
	return writerFunc(func(b []byte) (int, error) {
		if bytes.Contains(b, []byte(reportPrefix)) {
			return len(b), nil
		}
		return w.Write(b)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
