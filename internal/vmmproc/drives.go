package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/devices/virtio/block"
)

// DriveSlots is a VM with spare drive slots (*boot.VM is one).
type DriveSlots interface {
	SpareDrives() []boot.SpareDrive
	AttachDrive(ctx context.Context, slot int, path string, readOnly bool) error
	DetachDrive(ctx context.Context, slot int) error
}

var _ DriveSlots = (*boot.VM)(nil)

// Drives implements api.Controller: the spare drive slots (none without a
// Drives hook).
func (in *Instance) Drives(context.Context) ([]api.DriveSlot, error) {
	out := []api.DriveSlot{}
	if in.hooks.Drives == nil {
		return out, nil
	}
	for _, d := range in.hooks.Drives.SpareDrives() {
		out = append(out, api.DriveSlot{Slot: d.Slot, ID: d.ID, Path: d.Path, ReadOnly: d.ReadOnly, Sectors: d.Sectors})
	}
	return out, nil
}

// AttachDrive implements api.Controller.
func (in *Instance) AttachDrive(ctx context.Context, slot int, req api.DriveRequest) error {
	if in.hooks.Drives == nil {
		return fmt.Errorf("%w: this VM has no spare drive slots", api.ErrUnsupported)
	}
	if in.ended() {
		return fmt.Errorf("%w: the VM has stopped", api.ErrConflict)
	}
	if err := in.checkLeased(); err != nil {
		return err
	}
	return driveError(in.hooks.Drives.AttachDrive(ctx, slot, req.Path, req.ReadOnly))
}

// DetachDrive implements api.Controller.
func (in *Instance) DetachDrive(ctx context.Context, slot int) error {
	if in.hooks.Drives == nil {
		return fmt.Errorf("%w: this VM has no spare drive slots", api.ErrUnsupported)
	}
	if in.ended() {
		return fmt.Errorf("%w: the VM has stopped", api.ErrConflict)
	}
	if err := in.checkLeased(); err != nil {
		return err
	}
	return driveError(in.hooks.Drives.DetachDrive(ctx, slot))
}

// driveError gives a drive error its API status: an unknown slot is 404, a
// busy or empty slot 409, a bad image 400.
func driveError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, boot.ErrNoSuchSlot):
		return fmt.Errorf("%w: %w", api.ErrNotFound, err)
	case errors.Is(err, block.ErrBusy), errors.Is(err, block.ErrEmpty):
		return fmt.Errorf("%w: %w", api.ErrConflict, err)
	case errors.Is(err, block.ErrConfig), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", api.ErrBadRequest, err)
	}
	return err
}
