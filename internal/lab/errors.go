package lab

import (
	"errors"
	"time"
)

// Sentinel errors; Run and PrepareKernel wrap them with details.
var (
	// ErrConfig means the Config is invalid.
	ErrConfig = errors.New("lab: invalid configuration")
	// ErrQEMUMissing means qemu-system-x86_64 is not installed.
	ErrQEMUMissing = errors.New("lab: qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
	// ErrBusyboxMissing means no static busybox was found for L1.
	ErrBusyboxMissing = errors.New("lab: static busybox not found (apt-get install busybox-static)")
	// ErrKernelPackage means L1's kernel package could not be resolved,
	// downloaded or unpacked.
	ErrKernelPackage = errors.New("lab: kernel package unavailable")
	// ErrModule means a kernel module L1 needs is missing from the kernel
	// package.
	ErrModule = errors.New("lab: kernel module not found")
	// ErrNotStatic means the ember binary for L1 is dynamically linked;
	// it runs as L1's init, before any library could be found. Build it
	// with CGO_ENABLED=0.
	ErrNotStatic = errors.New("lab: binary is dynamically linked (build with CGO_ENABLED=0)")
	// ErrBoot means L1 did not reach the point of running the command.
	ErrBoot = errors.New("lab: L1 failed to boot")
	// ErrStart means L1 booted but the agent could not start the command.
	ErrStart = errors.New("lab: command could not be started in L1")
	// ErrLost means L1 stopped while the command ran, without reporting
	// its exit status.
	ErrLost = errors.New("lab: L1 stopped before the command finished")
	// ErrFrozen means L1 stopped answering while the command ran (no
	// frame, not even a heartbeat, for FreezeTimeout): the emulator froze,
	// not the command. L1 was killed; the run may be repeated.
	ErrFrozen = errors.New("lab: L1 froze")
	// ErrTimeout means the run exceeded Config.Timeout; L1 was killed.
	ErrTimeout = errors.New("lab: timed out")
)

// DefaultFreezeTimeout is how long L1 may stay silent (no output, no
// heartbeat) while the command runs before the run is declared frozen.
const DefaultFreezeTimeout = 90 * time.Second
