package guestrun

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	tg "github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/vmm/kvm"
)

// IsTestGuestSnapshot reports whether s was taken from a test guest (it
// carries the test ports' device state).
func IsTestGuestSnapshot(s *snapshot.Snapshot) bool {
	_, ok := s.State.Device(DeviceName)
	return ok
}

// Prepared is a test guest restored from a snapshot up to, but not
// including, its first instruction: its memory is mapped (or served) by
// the chosen backend, its vCPU state is set and the gate is open. Start
// it (or hand it to a VMM process that waits, paused, for a resume).
type Prepared struct {
	*tg.Guest
	// Memory is the restored guest memory and its backend.
	Memory *snapshot.Memory
	// Snapshot is the restored snapshot.
	Snapshot *snapshot.Snapshot
	// Before are the values the guest reported before the snapshot.
	Before []uint64
	// Took is how long Prepare took.
	Took time.Duration
}

// Prepare restores the test-guest snapshot snap into a new machine with
// the memory backend opts.Backend. For uffd and prefetch, faults are served
// from the moment it returns; a working set is installed only after
// StartPrefetch. Close the result when done.
func Prepare(ctx context.Context, sys *kvm.System, snap *snapshot.Snapshot, opts snapshot.MemoryOptions) (_ *Prepared, err error) {
	t0 := time.Now()
	dev, ok := snap.State.Device(DeviceName)
	if !ok {
		return nil, fmt.Errorf("%w: %s has no %q device state", ErrNotTestGuest, snap.Dir, DeviceName)
	}
	before, err := decodePorts(dev)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	mem, err := snapshot.OpenMemory(ctx, snap, opts)
	if err != nil {
		return nil, err
	}
	p := &Prepared{Memory: mem, Snapshot: snap, Before: before}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	// The image only sizes the machine: its code is never loaded.
	img := tg.NewImage([]byte{0x90}, mem.Guest().Size())
	if p.Guest, err = tg.NewMachine(ctx, sys, img, tg.Options{Memory: mem.Guest(), Logger: log}, true); err != nil {
		return nil, err
	}
	gate := &Gate{}
	gate.Open()
	if err := p.PIO().Insert(gate, GatePort, 4); err != nil {
		return nil, err
	}
	if err := snapshot.Restore(ctx, p.Machine, snap); err != nil {
		return nil, err
	}
	mem.Attach(p.Machine)
	p.Took = time.Since(t0)
	return p, nil
}

// Reports returns what the guest reported before the snapshot followed by
// what it reported since the restore.
func (p *Prepared) Reports() []uint64 {
	return append(slices.Clone(p.Before), p.Ports.Reports()...)
}

// Close closes the machine, then its memory.
func (p *Prepared) Close() error {
	if p.Guest != nil {
		p.Guest.Close()
	}
	return p.Memory.Close()
}
