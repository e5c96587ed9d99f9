package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/embervm/ember/internal/atomicfile"
	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/internal/vmmcmd"
	"github.com/embervm/ember/vmm/kvm"
)

func init() {
	register(&command{
		name:    "testguest",
		summary: "run a small built-in (or file) test guest and print what it did",
		run:     runTestguest,
	})
}

func runTestguest(ctx context.Context, args []string) error {
	fs := newFlagSet("testguest", "")
	program := fs.String("program", "sum", "built-in guest: "+vmmcmd.GuestNames())
	image := fs.String("image", "", "run this test-guest image file instead of a built-in program")
	write := fs.String("write", "", "write the built-in program as an image file here and exit")
	memMiB := fs.Uint64("mem", 64, "guest memory in MiB (built-in programs)")
	cpl0 := fs.Bool("cpl0", false, "run in kernel mode (CPL0): emulated, slowly, where KVM runs only user mode natively")
	timeout := fs.Duration("timeout", time.Minute, "stop the guest after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var img *testguest.Image
	if *image != "" {
		b, err := os.ReadFile(*image)
		if err != nil {
			return err
		}
		if img, err = testguest.ParseImage(b); err != nil {
			return fmt.Errorf("%s: %w", *image, err)
		}
	} else {
		g, ok := vmmcmd.Guests[*program]
		if !ok {
			return fmt.Errorf("unknown program %q (have %s)", *program, vmmcmd.GuestNames())
		}
		mem := *memMiB << 20
		code, err := g.Build(mem)
		if err != nil {
			return err
		}
		img = testguest.NewImage(code, mem)
		img.CPL0 = *cpl0
		if err := img.Validate(); err != nil {
			return err
		}
	}
	if *write != "" {
		b, err := img.MarshalBinary()
		if err != nil {
			return err
		}
		return atomicfile.Write(*write, b, 0o644)
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	mode := "CPL3"
	if img.CPL0 {
		mode = "CPL0"
	}
	fmt.Printf("test guest: %d bytes of code at %#x, %d MiB memory, %s\n", len(img.Code), img.Load, img.Memory>>20, mode)
	res, err := testguest.Run(ctx, sys, img, testguest.Options{Out: os.Stdout})
	if res != nil {
		for i, v := range res.Reports {
			fmt.Printf("report %d: %d (%#x)\n", i, v, v)
		}
		fmt.Printf("exits to the VMM: %d, ran %v\n", res.Exits, res.Elapsed.Round(time.Microsecond))
	}
	if err != nil {
		return fmt.Errorf("guest failed: %w", err)
	}
	fmt.Printf("exit code: %d\n", res.ExitCode)
	if res.ExitCode != 0 {
		return &exitError{code: res.ExitCode}
	}
	return nil
}
