package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/devices/serial"
	"github.com/embervm/ember/vmm/kvm"
)

func init() {
	register(&command{
		name:    "boot",
		summary: "boot a Linux kernel in a VM with its console on this terminal",
		run:     runBoot,
	})
}

func runBoot(ctx context.Context, args []string) error {
	fs := newFlagSet("boot", "")
	var cfg boot.Config
	fs.StringVar(&cfg.Kernel, "kernel", "", "vmlinux or bzImage (required)")
	fs.StringVar(&cfg.Initrd, "initrd", "", "initramfs")
	fs.StringVar(&cfg.Cmdline, "cmdline", "", "extra kernel command line (after "+boot.DefaultCmdline+")")
	fs.Uint64Var(&cfg.MemoryMiB, "mem", 256, "guest memory in MiB")
	fs.IntVar(&cfg.VCPUs, "vcpus", 1, "number of vCPUs")
	fs.StringVar(&cfg.CPUTemplate, "cpu-template", "", "CPU template: none, portable, emulation-safe")
	timeout := fs.Duration("timeout", 0, "stop the VM after this long (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.Console = os.Stdout
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	t0 := time.Now()
	vm, err := boot.Build(ctx, sys, cfg, nil)
	if err != nil {
		return err
	}
	defer vm.Close()
	fmt.Fprintf(os.Stderr, "ember: built VM in %v (%s kernel, entry %#x); booting\n", time.Since(t0).Round(time.Microsecond), vm.Kernel.Kind, vm.Kernel.Entry)
	if err := vm.Start(ctx); err != nil {
		return err
	}
	go pumpConsole(ctx, os.Stdin, vm.Serial)
	select {
	case <-vm.Done():
	case <-ctx.Done():
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		vm.Stop(stopCtx)
		cancel()
	}
	res, err := vm.Wait(context.Background())
	if err != nil {
		return err
	}
	for _, mk := range vm.Marks() {
		fmt.Fprintf(os.Stderr, "ember: boot marker %d at %v\n", mk.Code, mk.Elapsed.Round(time.Millisecond))
	}
	switch {
	case res.Err != nil:
		return fmt.Errorf("VM failed after %v: %w", time.Since(t0).Round(time.Millisecond), res.Err)
	case res.Stop != nil:
		fmt.Fprintf(os.Stderr, "ember: VM stopped after %v: %s\n", time.Since(t0).Round(time.Millisecond), res.Stop.Reason)
	case ctx.Err() != nil:
		return fmt.Errorf("VM stopped: %w", ctx.Err())
	}
	return nil
}

// pumpConsole feeds standard input to the guest's serial port, waiting for
// room in its FIFO instead of dropping bytes.
func pumpConsole(ctx context.Context, in io.Reader, s *serial.Serial) {
	buf := make([]byte, 256)
	for {
		n, err := in.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			k, qerr := s.Enqueue(p)
			p = p[k:]
			if errors.Is(qerr, serial.ErrFIFOFull) || (qerr == nil && len(p) > 0) {
				select {
				case <-s.Drained():
				case <-ctx.Done():
					return
				}
			} else if qerr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
