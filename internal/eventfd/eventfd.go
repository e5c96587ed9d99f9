// Package eventfd wraps Linux eventfd(2) objects: the counters that KVM
// signals for an ioeventfd and waits on for an irqfd.
//
// The descriptor is non-blocking and registered with the Go runtime's
// poller, so a goroutine blocked in Read parks without holding an OS thread
// and is woken (with ErrClosed) by Close.
package eventfd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned by Read and Write after Close.
var ErrClosed = errors.New("eventfd: closed")

// EventFD is an eventfd counter. It implements devices.Interrupt (Trigger),
// so an irqfd-backed interrupt is just an EventFD bound with KVM_IRQFD.
type EventFD struct {
	f  *os.File
	fd int
}

// New creates an eventfd with a zero counter. It is close-on-exec and
// non-blocking; Read still blocks the calling goroutine until the counter is
// non-zero.
func New() (*EventFD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("eventfd2", err)
	}
	return &EventFD{f: os.NewFile(uintptr(fd), fmt.Sprintf("eventfd:%d", fd)), fd: fd}, nil
}

// Fd returns the descriptor, to pass to KVM_IRQFD or KVM_IOEVENTFD. It stays
// valid until Close and, unlike os.File.Fd, leaves the descriptor
// non-blocking.
func (e *EventFD) Fd() int { return e.fd }

// Write adds v to the counter, waking a reader.
func (e *EventFD) Write(v uint64) error {
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], v)
	_, err := e.f.Write(b[:])
	return mapErr("write", err)
}

// Signal adds one to the counter.
func (e *EventFD) Signal() error { return e.Write(1) }

// Trigger is Signal; it makes an EventFD usable as a devices.Interrupt.
func (e *EventFD) Trigger() error { return e.Signal() }

// Read blocks until the counter is non-zero, then returns it and resets it
// to zero.
func (e *EventFD) Read() (uint64, error) {
	var b [8]byte
	if _, err := e.f.Read(b[:]); err != nil {
		return 0, mapErr("read", err)
	}
	return binary.NativeEndian.Uint64(b[:]), nil
}

// Close releases the descriptor and wakes any blocked Read with ErrClosed.
func (e *EventFD) Close() error { return mapErr("close", e.f.Close()) }

func mapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("eventfd %s: %w", op, err)
}
