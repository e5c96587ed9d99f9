package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labguest"
)

func init() {
	register(&command{
		name:    "lab",
		summary: "run commands in the nested KVM lab (an L1 Linux under QEMU TCG with SVM)",
		run:     runLab,
	})
}

const labUsage = `Usage: ember lab <subcommand> [flags]

Subcommands:
  run [flags] -- CMD ARGS...   run CMD in a fresh L1 and exit with its status
  kernel [flags]               fetch L1's kernel and build its base image; print them

Run 'ember lab <subcommand> -h' for its flags.
`

func runLab(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, labUsage)
		return &exitError{code: 2}
	}
	switch args[0] {
	case "run":
		return labRun(ctx, args[1:])
	case "kernel":
		return labKernel(ctx, args[1:])
	case "guest-init":
		// L1's PID 1 (see internal/lab/labguest); not for interactive use.
		err := labguest.Main(ctx)
		if errors.Is(err, labguest.ErrNotPID1) {
			return err
		}
		slog.Error("lab agent failed", "err", err)
		labguest.PowerOff()
		return err
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, labUsage)
		return nil
	}
	fmt.Fprintf(os.Stderr, "ember lab: unknown subcommand %q\n\n%s", args[0], labUsage)
	return &exitError{code: 2}
}

// multiFlag collects a repeated string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func labRun(ctx context.Context, args []string) error {
	fs := newFlagSet("lab run", "-- CMD ARGS...")
	timeout := fs.Duration("timeout", lab.DefaultTimeout, "kill L1 after this long, boot included")
	mem := fs.Int("mem", lab.DefaultMemoryMiB, "L1 memory in MiB")
	cpus := fs.Int("cpus", lab.DefaultCPUs, "L1 vCPUs (more than 1 uses multi-threaded TCG)")
	ember := fs.String("ember", "", "static ember binary to place in L1 as /bin/ember (default: this executable)")
	consoleLog := fs.String("console", "", "write L1's kernel console to this file")
	verbose := fs.Bool("v", false, "stream L1's kernel console to stderr and print timings")
	var files, env, kargs multiFlag
	fs.Var(&kargs, "kernel-arg", "append an argument to L1's kernel command line (repeatable)")
	fs.Var(&files, "file", "copy a host file into L1, as HOST:GUEST (repeatable)")
	fs.Var(&env, "env", "set KEY=VALUE in the command's environment (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return &exitError{code: 2}
	}
	cfg := lab.Config{
		Args: fs.Args(), Env: env, Timeout: *timeout, MemoryMiB: *mem, CPUs: *cpus,
		KernelArgs: kargs, Ember: *ember, ConsoleLog: *consoleLog, Stdout: os.Stdout, Stderr: os.Stderr,
	}
	if *verbose {
		cfg.Console = os.Stderr
	}
	if cfg.Ember == "" {
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find this executable: %w", err)
		}
		if err := lab.CheckStatic(self); err != nil {
			return fmt.Errorf("%w; rebuild ember with CGO_ENABLED=0 or pass --ember", err)
		}
		cfg.Ember = self
	}
	for _, f := range files {
		host, guest, ok := strings.Cut(f, ":")
		if !ok || host == "" || guest == "" {
			return &exitError{code: 2, err: fmt.Errorf("--file %q: want HOST:GUEST", f)}
		}
		cfg.Files = append(cfg.Files, lab.File{HostPath: host, GuestPath: guest})
	}
	res, err := lab.Run(ctx, cfg)
	if errors.Is(err, lab.ErrStart) {
		return &exitError{code: 127, err: err} // as a shell reports it
	}
	if err != nil {
		return err
	}
	if *verbose {
		fmt.Fprintf(os.Stderr, "ember lab: exit %d; boot to command %v (L1 uptime %v), total %v\n",
			res.ExitCode, res.Boot.Round(time.Millisecond), res.GuestBoot.Round(time.Millisecond), res.Total.Round(time.Millisecond))
	}
	if res.ExitCode != 0 {
		return &exitError{code: res.ExitCode}
	}
	return nil
}

func labKernel(ctx context.Context, args []string) error {
	fs := newFlagSet("lab kernel", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("unexpected arguments")}
	}
	img, err := lab.Prepare(ctx, lab.Config{})
	if err != nil {
		return err
	}
	printKV(os.Stdout, "package", img.Kernel.Package+" "+img.Kernel.Version)
	printKV(os.Stdout, "release", img.Kernel.Release)
	printKV(os.Stdout, "kernel", img.Kernel.Image)
	printKV(os.Stdout, "modules", img.Kernel.ModulesDir)
	printKV(os.Stdout, "initramfs", img.Base)
	printKV(os.Stdout, "loaded", strings.Join(img.Modules, " "))
	return nil
}

func printKV(w io.Writer, k, v string) { fmt.Fprintf(w, "%-10s %s\n", k+":", v) }
