package x86

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrE820Full: the e820 table already holds E820MaxEntries entries.
	ErrE820Full = errors.New("x86: e820 table full")
	// ErrE820Range: an e820 entry is empty or wraps.
	ErrE820Range = errors.New("x86: invalid e820 range")
	// ErrCmdlineTooLong: the kernel command line exceeds the kernel's or
	// ember's limit.
	ErrCmdlineTooLong = errors.New("x86: kernel command line too long")
	// ErrCmdlineInvalid: the command line contains a NUL byte.
	ErrCmdlineInvalid = errors.New("x86: kernel command line contains NUL")
	// ErrSetupHeader: the setup header handed over by the loader is
	// malformed.
	ErrSetupHeader = errors.New("x86: invalid setup header")
	// ErrInitrdNoFit: no place in low memory can hold the initrd.
	ErrInitrdNoFit = errors.New("x86: initrd does not fit in guest memory")
	// ErrMemory: writing a boot structure to guest memory failed.
	ErrMemory = errors.New("x86: guest memory")
	// ErrVCPUCount: the vCPU count is zero or more than the layout allows.
	ErrVCPUCount = errors.New("x86: unsupported vCPU count")
	// ErrCPUID: the supported CPUID list lacks a leaf ember needs, or is
	// too long.
	ErrCPUID = errors.New("x86: CPUID")
	// ErrTemplate: an unknown CPU template name.
	ErrTemplate = errors.New("x86: unknown CPU template")
	// ErrLayout: guest memory size outside what the layout supports.
	ErrLayout = errors.New("x86: unsupported memory layout")
)
