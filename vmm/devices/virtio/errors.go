package virtio

import (
	"errors"
	"fmt"
)

// Sentinel errors for queues and descriptor chains. Each describes a
// driver (guest) mistake; none is a host failure.
var (
	// ErrQueueSize: the queue size is zero, not a power of two, or larger
	// than the device's maximum.
	ErrQueueSize = errors.New("virtio: bad queue size")
	// ErrQueueNotReady: a queue that the driver did not mark ready.
	ErrQueueNotReady = errors.New("virtio: queue not ready")
	// ErrAlignment: a ring address is not aligned as the spec requires.
	ErrAlignment = errors.New("virtio: misaligned ring address")
	// ErrRingOutOfMemory: a ring does not lie inside one guest memory region.
	ErrRingOutOfMemory = errors.New("virtio: ring outside guest memory")
	// ErrAvailIndex: the available index moved ahead by more than the queue
	// size; the ring is corrupt.
	ErrAvailIndex = errors.New("virtio: available index out of range")
	// ErrDescIndex: a head or next index is not below the table size.
	ErrDescIndex = errors.New("virtio: descriptor index out of range")
	// ErrChainTooLong: a chain has more descriptors than its table (a loop).
	ErrChainTooLong = errors.New("virtio: descriptor chain too long")
	// ErrBufferOutOfMemory: a buffer does not lie inside guest memory.
	ErrBufferOutOfMemory = errors.New("virtio: buffer outside guest memory")
	// ErrBufferWraps: address plus length overflows 64 bits.
	ErrBufferWraps = errors.New("virtio: buffer address wraps")
	// ErrZeroLength: a descriptor with length zero.
	ErrZeroLength = errors.New("virtio: zero-length descriptor")
	// ErrReadAfterWrite: a device-readable descriptor follows a
	// device-writable one.
	ErrReadAfterWrite = errors.New("virtio: readable descriptor after writable one")
	// ErrIndirect: an indirect descriptor that was not negotiated, is
	// nested, is chained, is not alone in its chain, or whose table length
	// is not a whole number of descriptors.
	ErrIndirect = errors.New("virtio: bad indirect descriptor")
	// ErrUsedIndex: the device returned a head that is not below the queue
	// size (a device bug).
	ErrUsedIndex = errors.New("virtio: used element index out of range")
	// ErrBadRequest: a chain's buffers do not have the layout the device
	// expects (too short, wrong direction).
	ErrBadRequest = errors.New("virtio: malformed request")
)

// ChainError is a descriptor chain that failed validation. The chain's head
// was valid, so the queue hands it back to the driver with length zero.
type ChainError struct {
	Head uint16
	Err  error
}

func (e *ChainError) Error() string { return fmt.Sprintf("descriptor chain %d: %v", e.Head, e.Err) }

func (e *ChainError) Unwrap() error { return e.Err }
