package block

import "errors"

// Sentinel errors.
var (
	// ErrConfig: the device configuration is unusable.
	ErrConfig = errors.New("virtio-block: bad configuration")
	// ErrCapacityChanged: on restore, the image's size differs from the
	// snapshot's (the guest already knows the old capacity).
	ErrCapacityChanged = errors.New("virtio-block: image capacity changed since the snapshot")
	// ErrNotSpare: Attach or Detach on a drive built with a fixed image.
	ErrNotSpare = errors.New("virtio-block: not a spare drive")
	// ErrBusy: Attach on a spare drive that has a backing file (detach it
	// first).
	ErrBusy = errors.New("virtio-block: drive already has a backing file")
	// ErrEmpty: Detach on a spare drive without a backing file.
	ErrEmpty = errors.New("virtio-block: drive has no backing file")
	// ErrClosed: the device was closed (its VM is going away).
	ErrClosed = errors.New("virtio-block: device closed")
)
