package block

import "errors"

// Sentinel errors.
var (
	// ErrConfig: the device configuration is unusable.
	ErrConfig = errors.New("virtio-block: bad configuration")
	// ErrCapacityChanged: on restore, the image's size differs from the
	// snapshot's (the guest already knows the old capacity).
	ErrCapacityChanged = errors.New("virtio-block: image capacity changed since the snapshot")
)
