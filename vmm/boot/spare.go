package boot

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/embervm/ember/vmm/devices/virtio/block"
)

// ErrNoSuchSlot: a spare drive slot number the VM does not have.
var ErrNoSuchSlot = errors.New("boot: no such spare drive slot")

// MaxSpareDrives bounds Config.SpareDrives (each takes a virtio-mmio slot
// and an interrupt line).
const MaxSpareDrives = 8

// SpareDriveID is the serial (/sys/block/vdX/serial) of spare slot i: the
// guest finds the slot's disk by it.
func SpareDriveID(i int) string { return "ember-spare" + strconv.Itoa(i) }

// SpareDrive describes one spare drive slot.
type SpareDrive struct {
	// Slot numbers the spare slots from 0, in the order the guest probes
	// them (after Config.Drives).
	Slot int `json:"slot"`
	// ID is the serial the guest sees (SpareDriveID).
	ID string `json:"id"`
	// Path and ReadOnly describe the attached image; Path is empty for an
	// empty slot.
	Path     string `json:"path,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Sectors is the capacity the guest is told (0: empty).
	Sectors uint64 `json:"sectors"`
}

// SpareDrives lists the VM's spare drive slots.
func (v *VM) SpareDrives() []SpareDrive {
	out := make([]SpareDrive, 0, len(v.spares))
	for i, d := range v.spares {
		st := d.State()
		out = append(out, SpareDrive{Slot: i, ID: st.Config.ID, Path: st.Config.Path, ReadOnly: st.Config.ReadOnly, Sectors: st.Capacity})
	}
	return out
}

// AttachDrive gives spare slot its backing image; the guest learns of it
// through a configuration-change interrupt and sees the disk grow from 0
// (poll /sys/block/vdX/size). Errors: ErrNoSuchSlot, block.ErrBusy (the
// slot has an image), block.ErrConfig (not a file, smaller than a sector)
// or the open error (fs.ErrNotExist, ...). It may be called while the VM
// runs or is paused (a restored VM before its first resume), not during a
// snapshot.
func (v *VM) AttachDrive(ctx context.Context, slot int, path string, readOnly bool) error {
	d, err := v.spare(slot)
	if err != nil {
		return err
	}
	v.driveMu.Lock()
	defer v.driveMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.Attach(block.Attachment{Path: path, ReadOnly: readOnly}); err != nil {
		return fmt.Errorf("boot: spare drive %d: %w", slot, err)
	}
	return nil
}

// DetachDrive empties spare slot (the guest must have unmounted its disk).
// Errors: ErrNoSuchSlot, block.ErrEmpty.
func (v *VM) DetachDrive(ctx context.Context, slot int) error {
	d, err := v.spare(slot)
	if err != nil {
		return err
	}
	v.driveMu.Lock()
	defer v.driveMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.Detach(); err != nil {
		return fmt.Errorf("boot: spare drive %d: %w", slot, err)
	}
	return nil
}

func (v *VM) spare(slot int) (*block.Device, error) {
	if slot < 0 || slot >= len(v.spares) {
		return nil, fmt.Errorf("%w: %d (the VM has %d)", ErrNoSuchSlot, slot, len(v.spares))
	}
	return v.spares[slot], nil
}

// addSpareDrives adds n empty spare slots after the configured drives.
func (v *VM) addSpareDrives(n int) error {
	for i := range n {
		dev, err := block.New(block.Config{Spare: true, ID: SpareDriveID(i)})
		if err != nil {
			return fmt.Errorf("boot: spare drive %d: %w", i, err)
		}
		if err := v.attachVirtio("block", dev, dev); err != nil {
			dev.Close()
			return err
		}
		v.spares = append(v.spares, dev)
	}
	return nil
}
