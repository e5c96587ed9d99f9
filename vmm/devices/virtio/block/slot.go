package block

import (
	"errors"
	"fmt"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// Attachment describes a spare drive's backing file.
type Attachment struct {
	// Path is the raw image (a regular file or a block device) of at least
	// one sector.
	Path string
	// ReadOnly opens it read-only; the device then answers writes with
	// IOERR (the guest still sees a writable disk: see Config.Spare).
	ReadOnly bool
}

// Attach gives an empty spare drive its backing file and, if the driver
// is active, raises a configuration-change interrupt so that the guest
// re-reads the capacity (Linux's virtio_blk resizes the disk). Requests in
// flight finish first; the next ones use the new file. It fails with
// ErrNotSpare for a drive built with a fixed image, ErrBusy if the drive
// has a backing file, ErrConfig for an image smaller than a sector or not
// a file, and with the open error for a missing or unreadable one.
func (d *Device) Attach(a Attachment) error {
	if !d.spare {
		return ErrNotSpare
	}
	if a.Path == "" {
		return fmt.Errorf("%w: no image path", ErrConfig)
	}
	// Cheap checks first, without opening the file.
	d.mu.RLock()
	busy := d.file != nil
	d.mu.RUnlock()
	if busy {
		return fmt.Errorf("%w: %s is attached", ErrBusy, d.State().Config.Path)
	}
	f, capacity, err := openImage(a.Path, a.ReadOnly)
	if err != nil {
		return err
	}
	if capacity == 0 {
		f.Close()
		return fmt.Errorf("%w: %s is smaller than one %d-byte sector", ErrConfig, a.Path, SectorSize)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		f.Close()
		return ErrClosed
	}
	if d.file != nil {
		d.mu.Unlock()
		f.Close()
		return fmt.Errorf("%w: %s is attached", ErrBusy, d.State().Config.Path)
	}
	d.path, d.readOnly, d.file, d.capacity = a.Path, a.ReadOnly, f, capacity
	sig := d.sig
	d.mu.Unlock()
	d.log.Info("drive attached", "path", a.Path, "read_only", a.ReadOnly, "sectors", capacity)
	return d.configChanged(sig)
}

// Detach removes a spare drive's backing file: the drive reads as empty
// (capacity 0) and the guest gets a configuration-change interrupt.
// Requests in flight finish first. The guest must have stopped using the
// disk (unmounted it); later requests fail with IOERR. It fails with
// ErrNotSpare for a drive built with a fixed image and ErrEmpty for a
// drive without a backing file.
func (d *Device) Detach() error {
	if !d.spare {
		return ErrNotSpare
	}
	d.mu.Lock()
	f := d.file
	if f == nil {
		d.mu.Unlock()
		return ErrEmpty
	}
	path := d.path
	d.path, d.readOnly, d.file, d.capacity = "", false, nil, 0
	sig := d.sig
	d.mu.Unlock()
	err := f.Close()
	d.log.Info("drive detached", "path", path)
	return errors.Join(d.configChanged(sig), err)
}

// configChanged raises the configuration-change interrupt through the
// active driver's transport; before activation (or after a reset) the
// driver reads the configuration when it sets the device up.
func (d *Device) configChanged(sig virtio.Signaller) error {
	if sig == nil {
		return nil
	}
	if err := sig.ConfigChanged(); err != nil {
		return fmt.Errorf("virtio-block: configuration-change interrupt: %w", err)
	}
	return nil
}

// Spare reports whether the drive is a spare slot (Config.Spare).
func (d *Device) Spare() bool { return d.spare }

// Attached returns a spare drive's current attachment, and false when it
// has none.
func (d *Device) Attached() (Attachment, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return Attachment{Path: d.path, ReadOnly: d.readOnly}, d.file != nil
}
