// Command ember-vmm is ember vmm alone: one VMM (a test guest, a Linux
// boot, or a restore of either kind of snapshot) behind the control API on
// a Unix socket, in a binary that links only what a VMM runs
// (internal/vmmcmd). The warm pool starts its VMMs with it when it is next
// to the ember binary: every idle pooled VMM keeps resident the pages of
// its binary that its start touched, and this binary has none of the
// lab, image, containerd, pool or benchmark code (or their package
// initialization) of the ember CLI.
//
// It takes ember vmm's flags. A leading "vmm" is accepted, so that
// `ember-vmm vmm ARGS` works wherever `ember vmm ARGS` does (the pool runs
// `<ember> vmm ARGS`).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/embervm/ember/internal/vmmcmd"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	vmmcmd.SetLogger()
	if len(args) > 0 && args[0] == "vmm" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("ember-vmm", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: ember-vmm [vmm] [flags]\n\nember vmm in a binary of its own: one VMM behind the control API on a Unix socket.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := vmmcmd.Run(ctx, fs, args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(os.Stderr, "ember-vmm: %v\n", strings.TrimSpace(err.Error()))
	return 1
}
