package mmio

import "errors"

// Sentinel errors.
var (
	// ErrNotPaused: State was called on a transport that was not paused.
	ErrNotPaused = errors.New("virtio-mmio: transport not paused")
	// ErrBadState: a saved state does not fit the device or guest memory.
	ErrBadState = errors.New("virtio-mmio: saved state does not fit")
	// ErrBadDevice: the device offers no VIRTIO_F_VERSION_1 or no queues.
	ErrBadDevice = errors.New("virtio-mmio: unusable device")
	// ErrAttached: AttachIOEventFDs was called twice.
	ErrAttached = errors.New("virtio-mmio: ioeventfds already attached")
)
