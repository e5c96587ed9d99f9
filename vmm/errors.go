package vmm

import (
	"errors"
	"fmt"

	"github.com/embervm/ember/vmm/kvm"
)

// Sentinel errors.
var (
	// ErrRunning: the operation needs a paused (or not yet started) vCPU.
	ErrRunning = errors.New("vmm: vCPU is running")
	// ErrStopped: the vCPU or machine has stopped.
	ErrStopped = errors.New("vmm: stopped")
	// ErrNotStarted: the machine was never started.
	ErrNotStarted = errors.New("vmm: not started")
	// ErrGuestShutdown: the guest triple-faulted (KVM_EXIT_SHUTDOWN) or asked
	// for a shutdown or reset.
	ErrGuestShutdown = errors.New("vmm: guest shut down")
	// ErrUnhandledExit: KVM returned an exit reason ember does not handle.
	ErrUnhandledExit = errors.New("vmm: unhandled exit")
	// ErrBadConfig: the machine configuration is invalid.
	ErrBadConfig = errors.New("vmm: invalid configuration")
)

// ExitError is a vCPU stop caused by a guest exit that ember cannot continue
// from. It names the vCPU, the exit and the guest's instruction pointer.
type ExitError struct {
	VCPU   int
	Reason kvm.ExitReason
	RIP    uint64
	Detail string
	Err    error // ErrUnhandledExit, ErrGuestShutdown, or a device error
}

func (e *ExitError) Error() string {
	s := fmt.Sprintf("vCPU %d: %s at rip %#x", e.VCPU, e.Reason, e.RIP)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ExitError) Unwrap() error { return e.Err }

// StopRequest is returned by a device (through the bus) to end the machine
// cleanly, for example when the guest writes to a power-off or test-exit
// port. Code is reported by Machine.Wait's result.
type StopRequest struct {
	Code   int
	Reason string
}

func (s *StopRequest) Error() string {
	return fmt.Sprintf("guest requested stop (code %d): %s", s.Code, s.Reason)
}
