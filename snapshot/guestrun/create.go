package guestrun

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	tg "github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/vmm/kvm"
)

// DeviceName is the device-state blob that marks a test-guest snapshot and
// carries the test ports' state (the values reported before the snapshot).
const (
	DeviceName    = "testguest"
	DeviceVersion = 1
)

// ErrNotTestGuest: the snapshot was not taken from a test guest.
var ErrNotTestGuest = errors.New("guestrun: not a test-guest snapshot")

// Spec describes a test guest to snapshot.
type Spec struct {
	// Code is the program (see MixProgram, WorkingSetProgram).
	Code []byte
	// Memory is the guest memory size.
	Memory uint64
	// PauseAfter pauses the guest after it ran this long; when zero the
	// guest is paused once it waits at the gate.
	PauseAfter time.Duration
	// Until, when set with PauseAfter, keeps the guest running (pausing
	// every PauseAfter to look) until its vCPU 0 registers satisfy it.
	Until func(kvm.Regs) bool
	// DirtyLog turns on the dirty log (for diff snapshots).
	DirtyLog bool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Source is a running (or paused) test guest that snapshots are taken from.
type Source struct {
	*tg.Guest
	Gate *Gate
	// LastID is the ID of the latest snapshot taken, the parent of the next
	// diff.
	LastID snapshot.ID
}

// Start creates the guest described by spec and starts it.
func Start(ctx context.Context, sys *kvm.System, spec Spec) (*Source, error) {
	img := tg.NewImage(spec.Code, spec.Memory)
	g, err := tg.NewMachine(ctx, sys, img, tg.Options{DirtyLog: spec.DirtyLog, Logger: spec.Logger}, false)
	if err != nil {
		return nil, err
	}
	// A guest's first touch of a page the host has not faulted in costs a
	// round trip through the nested hypervisor on the development hosts
	// (~65 µs): fault every page in from the host first (~1 µs each).
	for _, r := range g.Memory().Regions() {
		if err := unix.Madvise(r.Host(), unix.MADV_POPULATE_WRITE); err != nil {
			g.Close()
			return nil, fmt.Errorf("guestrun: populating guest memory: %w", err)
		}
	}
	s := &Source{Guest: g, Gate: &Gate{}}
	if err := g.PIO().Insert(s.Gate, GatePort, 4); err != nil {
		g.Close()
		return nil, err
	}
	if err := g.Start(ctx); err != nil {
		g.Close()
		return nil, err
	}
	return s, nil
}

// PauseWhenReady waits per spec (a delay, a condition on the registers, or
// until the guest reads the gate) and pauses the guest.
func (s *Source) PauseWhenReady(ctx context.Context, spec Spec) error {
	for spec.Until != nil {
		if err := s.PauseWhenReady(ctx, Spec{PauseAfter: spec.PauseAfter}); err != nil {
			return err
		}
		var regs kvm.Regs
		err := s.VCPUs()[0].Do(ctx, func(fd *kvm.VCPU) (err error) { regs, err = fd.GetRegs(); return err })
		if err != nil {
			return err
		}
		if spec.Until(regs) {
			return nil
		}
		if err := s.Resume(ctx); err != nil {
			return err
		}
	}
	if spec.PauseAfter > 0 {
		select {
		case <-time.After(spec.PauseAfter):
		case <-ctx.Done():
			return ctx.Err()
		case <-s.Done():
			return fmt.Errorf("guestrun: guest ended before it was paused")
		}
	} else {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for s.Gate.Reads() == 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			case <-s.Done():
				return fmt.Errorf("guestrun: guest ended before it reached the gate")
			}
		}
	}
	return s.Pause(ctx)
}

// Save writes a snapshot (a diff on the previous one if diff) of the
// paused guest into dir, with the test devices' state.
func (s *Source) Save(ctx context.Context, dir string, diff bool) (*snapshot.State, *snapshot.SaveStats, error) {
	st, stats, err := snapshot.Save(ctx, s.Machine, dir, snapshot.SaveOptions{
		Diff: diff, Parent: s.LastID,
		Devices: []snapshot.DeviceState{{Name: DeviceName, Version: DeviceVersion, Data: encodePorts(s.Ports.Reports())}},
	})
	if err != nil {
		return nil, nil, err
	}
	s.LastID = st.ID
	return st, stats, nil
}

// Create runs spec's guest, pauses it, saves a full snapshot into dir and
// closes the guest.
func Create(ctx context.Context, sys *kvm.System, dir string, spec Spec) (*snapshot.State, error) {
	s, err := Start(ctx, sys, spec)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := s.PauseWhenReady(ctx, spec); err != nil {
		return nil, err
	}
	st, _, err := s.Save(ctx, dir, false)
	return st, err
}

func encodePorts(reports []uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(reports)))
	for _, r := range reports {
		b = binary.LittleEndian.AppendUint64(b, r)
	}
	return b
}

func decodePorts(d snapshot.DeviceState) ([]uint64, error) {
	if d.Version != DeviceVersion {
		return nil, fmt.Errorf("%w: %s device state version %d, want %d", snapshot.ErrVersion, d.Name, d.Version, DeviceVersion)
	}
	b := d.Data
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %s device state of %d bytes", snapshot.ErrCorrupt, d.Name, len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n)*8 != uint64(len(b)-4) {
		return nil, fmt.Errorf("%w: %s device state holds %d bytes for %d reports", snapshot.ErrCorrupt, d.Name, len(b)-4, n)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[4+8*i:])
	}
	return out, nil
}
