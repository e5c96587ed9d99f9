package testguest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/kvm"
)

// Transplant saves the KVM state of g, which must be paused or not yet
// started, and restores it into a new machine for img over a copy of g's
// memory, as a snapshot restore would. The new machine is not started; g
// is left as it is. The new machine's devices start afresh.
func (g *Guest) Transplant(ctx context.Context, sys *kvm.System, img *Image, opts Options) (*Guest, error) {
	st, err := g.SaveState(ctx)
	if err != nil {
		return nil, err
	}
	n, err := NewMachine(ctx, sys, img, opts, true)
	if err != nil {
		return nil, err
	}
	src, dst := g.Memory().Regions(), n.Memory().Regions()
	if len(src) != len(dst) {
		n.Close()
		return nil, fmt.Errorf("%w: %d memory regions, the new machine has %d", ErrBadImage, len(src), len(dst))
	}
	for i := range src {
		copy(dst[i].Host(), src[i].Host())
	}
	if err := n.RestoreState(ctx, st); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// HopResult is what a guest run by RunHopping did, over all its machines.
type HopResult struct {
	// Hops counts the moves to a new machine.
	Hops int
	// ExitCode and Reports are the last machine's (reports are carried in
	// the guest's memory only, so a guest that reports before its last
	// move loses them: report at the end).
	ExitCode int
	Reports  []uint64
	// Pings, MMIOReads and MMIOWrites add up what the devices of every
	// machine saw.
	Pings, MMIOReads, MMIOWrites uint64
}

func (h *HopResult) add(g *Guest) {
	h.Pings += g.Ports.Pings()
	r, w := g.MMIO.Accesses()
	h.MMIOReads += uint64(r)
	h.MMIOWrites += uint64(w)
}

// RunHopping runs img to its exit while moving it from machine to machine:
// up to hops times it lets the guest run for a random time below maxGap,
// pauses it wherever it is, Transplants it into a fresh machine, closes
// the old one and starts the new one. A guest whose state survives every
// move intact ends as an uninterrupted run would.
func RunHopping(ctx context.Context, sys *kvm.System, img *Image, opts Options, hops int, maxGap time.Duration) (*HopResult, error) {
	g, err := NewMachine(ctx, sys, img, opts, false)
	if err != nil {
		return nil, err
	}
	defer func() { g.Close() }()
	if err := g.Start(ctx); err != nil {
		return nil, err
	}
	res := &HopResult{}
	for res.Hops < hops {
		select {
		case <-time.After(time.Duration(rand.Int64N(int64(maxGap)))):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if err := g.Pause(ctx); err != nil {
			if errors.Is(err, vmm.ErrStopped) {
				break // the guest ended
			}
			return res, err
		}
		n, err := g.Transplant(ctx, sys, img, opts)
		if err != nil {
			return res, fmt.Errorf("move %d: %w", res.Hops+1, err)
		}
		res.add(g)
		g.Close()
		g = n
		res.Hops++
		if err := g.Start(ctx); err != nil {
			return res, err
		}
	}
	out, err := g.Wait(ctx, time.Now())
	res.add(g)
	if out != nil {
		res.ExitCode, res.Reports = out.ExitCode, out.Reports
	}
	if err != nil {
		return res, fmt.Errorf("after %d moves: %w", res.Hops, err)
	}
	return res, nil
}

// HopCheck is a guest for RunHopping and what its result must be.
type HopCheck struct {
	Name    string
	Image   *Image
	Options Options
	// Check returns an error describing how r differs from an
	// uninterrupted run's result.
	Check func(r *HopResult) error
}

// ErrHopResult: a guest moved by RunHopping ended otherwise than an
// uninterrupted run does.
var ErrHopResult = errors.New("testguest: moved guest's result differs")

// HopChecks returns guests that end exactly as an uninterrupted run does
// however often RunHopping moves them, if save and restore are faithful.
// They keep their state in SSE registers, or sit in port-I/O or MMIO exits
// most of the time, so pauses land with live FPU state or in an exit that
// KVM completes only on the next KVM_RUN (a port write or MMIO read made
// twice, or lost, shows in the devices' counts). One makes its port writes
// with IOPL 0, allowed only by the TSS's I/O permission bitmap, as a Linux
// process after ioperm(2) does: the restored task register must keep
// allowing them.
func HopChecks() ([]HopCheck, error) {
	const sseN, pings, mmios = 1 << 31, 40_000, 20_000
	sse, err := SSEProgram(sseN)
	if err != nil {
		return nil, err
	}
	ping, err := PingProgram(pings)
	if err != nil {
		return nil, err
	}
	mmio, err := MMIOLoopProgram(mmios)
	if err != nil {
		return nil, err
	}
	checkPings := func(r *HopResult) error {
		if r.Pings != pings {
			return fmt.Errorf("%w: the machines saw %d port writes, the guest made %d", ErrHopResult, r.Pings, pings)
		}
		return nil
	}
	const mem = 8 << 20
	return []HopCheck{
		{"sse registers", NewImage(sse, mem), Options{}, func(r *HopResult) error {
			if want := ExpectedSSE(sseN); !slices.Equal(r.Reports, want) {
				return fmt.Errorf("%w: reported %#x, want %#x", ErrHopResult, r.Reports, want)
			}
			return nil
		}},
		{"port io", NewImage(ping, mem), Options{}, checkPings},
		{"port io through the tss bitmap", NewImage(ping, mem), Options{IOBitmap: true}, checkPings},
		{"mmio", NewImage(mmio, mem), Options{}, func(r *HopResult) error {
			if r.MMIOReads != mmios || r.MMIOWrites != mmios {
				return fmt.Errorf("%w: the machines saw %d MMIO reads and %d writes, the guest made %d of each",
					ErrHopResult, r.MMIOReads, r.MMIOWrites, mmios)
			}
			return nil
		}},
	}, nil
}

// Hop runs hc's guest under RunHopping with 40 moves at most 3 ms apart and
// checks it: it exits with 0, is moved at least 10 times (else it ends too
// soon to test anything) and passes hc.Check. The result is returned also
// when the check fails.
func (hc HopCheck) Hop(ctx context.Context, sys *kvm.System) (*HopResult, error) {
	r, err := RunHopping(ctx, sys, hc.Image, hc.Options, 40, 3*time.Millisecond)
	if err != nil {
		return nil, err
	}
	switch {
	case r.ExitCode != 0:
		return r, fmt.Errorf("%w: exit code %d", ErrHopResult, r.ExitCode)
	case r.Hops < 10:
		return r, fmt.Errorf("%w: the guest ended after only %d moves: make it run longer", ErrHopResult, r.Hops)
	}
	return r, hc.Check(r)
}
