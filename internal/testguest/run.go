package testguest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// Options tune a test-guest machine.
type Options struct {
	// Out receives what the guest prints on PortPutc.
	Out io.Writer
	// DirtyLog turns on KVM dirty logging.
	DirtyLog bool
	// Memory, when set, is used instead of fresh anonymous memory (for
	// restoring into memory served some other way). Its size must match.
	Memory *memory.Guest
	// Logger for the machine; nil means slog.Default().
	Logger *slog.Logger
	// IOBitmap starts the guest with IOPL 0 instead of 3, so that only the
	// TSS's I/O permission bitmap (which allows every port) lets its CPL3
	// code reach the test ports, as ioperm(2) lets a Linux process.
	IOBitmap bool
}

// Guest is a test-guest machine and its devices.
type Guest struct {
	*vmm.Machine
	Ports *Ports
	MMIO  *MMIODevice
}

// NewMachine creates a one-vCPU machine for img with the test devices, and,
// unless skipLoad, loads img into it. Pass skipLoad when the state will be
// restored from a snapshot instead.
func NewMachine(ctx context.Context, sys *kvm.System, img *Image, opts Options, skipLoad bool) (*Guest, error) {
	if err := img.Validate(); err != nil {
		return nil, err
	}
	mem := opts.Memory
	if mem == nil {
		var err error
		if mem, err = memory.NewAnonymous(memory.Range{GPA: 0, Size: img.Memory}); err != nil {
			return nil, err
		}
	} else if mem.Size() != img.Memory {
		return nil, fmt.Errorf("%w: memory of %d bytes for an image of %d", ErrBadImage, mem.Size(), img.Memory)
	}
	m, err := vmm.New(sys, vmm.Config{VCPUs: 1, Memory: mem, DirtyLog: opts.DirtyLog, Logger: opts.Logger})
	if err != nil {
		mem.Close()
		return nil, err
	}
	g := &Guest{Machine: m, Ports: NewPorts(opts.Out), MMIO: &MMIODevice{}}
	if err := errors.Join(
		m.PIO().Insert(g.Ports, PortReportLo, portsSize),
		m.MMIO().Insert(g.MMIO, MMIOBase, MMIOSize),
	); err != nil {
		m.Close()
		return nil, err
	}
	if !skipLoad {
		if err := Load(ctx, m, img); err != nil {
			m.Close()
			return nil, err
		}
		if opts.IOBitmap {
			err := m.VCPUs()[0].Do(ctx, func(fd *kvm.VCPU) error {
				r, err := fd.GetRegs()
				if err != nil {
					return err
				}
				r.RFLAGS &^= 3 << 12 // IOPL
				return fd.SetRegs(r)
			})
			if err != nil {
				m.Close()
				return nil, err
			}
		}
	}
	return g, nil
}

// Result is what a test guest did.
type Result struct {
	ExitCode int
	Reports  []uint64
	Exits    uint64
	Elapsed  time.Duration
}

// Wait waits for the guest to end and collects its result. A guest that
// ends other than through PortExit is an error.
func (g *Guest) Wait(ctx context.Context, start time.Time) (*Result, error) {
	res, err := g.Machine.Wait(ctx)
	if err != nil {
		return nil, err
	}
	out := &Result{Reports: g.Ports.Reports(), Elapsed: time.Since(start), Exits: g.VCPUs()[0].Exits()}
	if res.Err != nil {
		return out, res.Err
	}
	if res.Stop == nil {
		return out, fmt.Errorf("testguest: guest was stopped before it exited")
	}
	out.ExitCode = res.Stop.Code
	return out, nil
}

// Run creates a machine for img, runs it to its exit and closes it.
func Run(ctx context.Context, sys *kvm.System, img *Image, opts Options) (*Result, error) {
	g, err := NewMachine(ctx, sys, img, opts, false)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	start := time.Now()
	if err := g.Start(ctx); err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			g.Stop(stopCtx)
		case <-g.Done():
		}
	}()
	res, err := g.Wait(context.Background(), start)
	if err == nil && ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, err
}
