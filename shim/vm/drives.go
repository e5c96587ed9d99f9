package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containerd/log"
	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/shim/rootfs"
	vmmapi "github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
)

// ErrNoFreeSlot: every spare drive slot of the VM holds a container's
// rootfs.
var ErrNoFreeSlot = errors.New("vm: no free spare drive slot")

// diskWait bounds the wait for the guest to see an attached disk.
const diskWait = 30 * time.Second

// Slot marks besides a guest device: being attached, and detached on the
// host but not seen empty by the guest (never reused).
const (
	pendingSlot = "(attaching)"
	staleSlot   = "(stale)"
)

// Devices returns the guest device of each drive of the Spec, in order.
func (v *VM) Devices() []string { return append([]string(nil), v.devices...) }

// AttachDrive attaches d to a free spare drive slot of the running VM
// (PUT /drives/{slot}), waits until the guest sees the disk at its size
// (the agent's WaitBlockDevice) and returns its guest device. A VM without
// spare slots gives ErrNoHotAttach, one whose slots are all taken
// ErrNoFreeSlot.
func (v *VM) AttachDrive(ctx context.Context, d rootfs.Drive) (string, error) {
	v.slotMu.Lock()
	slot := -1
	for i, dev := range v.slots {
		if dev == "" {
			slot = i
			v.slots[i] = pendingSlot
			break
		}
	}
	n := len(v.slots)
	v.slotMu.Unlock()
	switch {
	case n == 0:
		return "", fmt.Errorf("%w (the VM has no spare drive slots)", ErrNoHotAttach)
	case slot < 0:
		return "", fmt.Errorf("%w: all %d are in use", ErrNoFreeSlot, n)
	}
	dev, err := v.attach(ctx, slot, d)
	if err != nil {
		return "", err // attach settled the slot
	}
	v.setSlot(slot, dev)
	return dev, nil
}

// attach puts d in slot and returns the guest device. On failure it
// settles the slot: free if nothing reached the VM, else emptied as
// DetachDrive empties one (free once the guest saw it empty; if not, or if
// the VMM could not detach it, never used again).
func (v *VM) attach(ctx context.Context, slot int, d rootfs.Drive) (string, error) {
	size, err := imageSize(d.Path)
	if err == nil {
		err = v.api.AttachDrive(ctx, slot, vmmapi.DriveRequest{Path: d.Path, ReadOnly: d.ReadOnly})
	}
	if err != nil {
		v.setSlot(slot, "")
		return "", fmt.Errorf("vm: attach %s to slot %d: %w", d.Path, slot, err)
	}
	dev, err := v.waitDisk(ctx, slot, size)
	if err != nil {
		// The guest may still see the disk come (and go) later: the slot
		// must not take another container's disk before it saw it empty.
		if derr := v.emptySlot(context.WithoutCancel(ctx), slot); derr != nil {
			log.G(ctx).WithError(derr).Warn("vm: after a failed attach")
		}
		return "", err
	}
	return dev, nil
}

func (v *VM) setSlot(slot int, dev string) {
	v.slotMu.Lock()
	v.slots[slot] = dev
	v.slotMu.Unlock()
}

// waitDisk asks the agent for the disk of slot once it has size bytes.
func (v *VM) waitDisk(ctx context.Context, slot int, size uint64) (string, error) {
	r, err := v.agent.WaitBlockDevice(ctx, &api.WaitBlockDeviceRequest{
		Serial: boot.SpareDriveID(slot), SizeBytes: size, TimeoutNs: uint64(diskWait),
	})
	if err != nil {
		return "", fmt.Errorf("vm: the guest did not see the disk in slot %d: %w", slot, err)
	}
	return r.Device, nil
}

// DetachDrive empties the spare slot that holds the guest device dev (its
// container is gone). A device that is not in a spare slot (a drive the
// VM booted with) is left alone.
func (v *VM) DetachDrive(ctx context.Context, dev string) error {
	v.slotMu.Lock()
	slot := -1
	for i, d := range v.slots {
		if d == dev && dev != "" && dev != pendingSlot && dev != staleSlot {
			slot = i
			break
		}
	}
	v.slotMu.Unlock()
	if slot < 0 {
		return nil
	}
	return v.emptySlot(ctx, slot)
}

// emptySlot detaches slot's image and frees the slot once the guest saw
// it empty: a late capacity update to 0 must not hit the next container's
// disk. A slot the host could not empty keeps its device (a later
// DetachDrive tries again); one the guest did not see empty stays unused.
func (v *VM) emptySlot(ctx context.Context, slot int) error {
	if err := v.api.DetachDrive(ctx, slot); err != nil {
		return fmt.Errorf("vm: detach slot %d: %w", slot, err)
	}
	_, err := v.agent.WaitBlockDevice(ctx, &api.WaitBlockDeviceRequest{
		Serial: boot.SpareDriveID(slot), Empty: true, TimeoutNs: uint64(diskWait),
	})
	if err != nil {
		v.setSlot(slot, staleSlot)
		return fmt.Errorf("vm: slot %d stays unused, the guest did not see it empty: %w", slot, err)
	}
	v.setSlot(slot, "")
	return nil
}

// imageSize is the size the guest sees for an image: whole sectors of a
// file or block device.
func imageSize(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	return uint64(n) / 512 * 512, nil
}
