package kvm

import (
	"fmt"
	"unsafe"
)

// ExitReason is kvm_run.exit_reason.
type ExitReason uint32

// Exit reasons ember handles or reports.
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "UNKNOWN", ExitException: "EXCEPTION", ExitIO: "IO",
	ExitHypercall: "HYPERCALL", ExitDebug: "DEBUG", ExitHLT: "HLT", ExitMMIO: "MMIO",
	ExitIRQWindowOpen: "IRQ_WINDOW_OPEN", ExitShutdown: "SHUTDOWN",
	ExitFailEntry: "FAIL_ENTRY", ExitIntr: "INTR", ExitInternalError: "INTERNAL_ERROR",
	ExitSystemEvent: "SYSTEM_EVENT",
}

func (r ExitReason) String() string {
	if n, ok := exitNames[r]; ok {
		return "KVM_EXIT_" + n
	}
	return fmt.Sprintf("KVM_EXIT(%d)", uint32(r))
}

// System event types (kvm_run.system_event.type).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// IO directions.
const (
	IODirIn  = 0
	IODirOut = 1
)

// RunData is the head of struct kvm_run, shared between KVM and the VMM.
// Only the vCPU's own thread reads it, except ImmediateExit, which a kicker
// sets from another thread.
type RunData struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 ExitReason
	ReadyForInterruptInjection uint8
	IFFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
	exit                       [256]byte // the exit-specific union
}

// IOExit is kvm_run.io.
type IOExit struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

// MMIOExit is kvm_run.mmio.
type MMIOExit struct {
	PhysAddr uint64
	Data     [8]uint8
	Len      uint32
	IsWrite  uint8
}

// FailEntryExit is kvm_run.fail_entry.
type FailEntryExit struct {
	HardwareEntryFailureReason uint64
	CPU                        uint32
}

// InternalExit is kvm_run.internal.
type InternalExit struct {
	Suberror uint32
	NData    uint32
	Data     [16]uint64
}

// SystemEventExit is kvm_run.system_event.
type SystemEventExit struct {
	Type  uint32
	NData uint32
	Data  [16]uint64
}

// IO returns the port-I/O exit data. Valid when ExitReason is ExitIO.
func (r *RunData) IO() *IOExit { return (*IOExit)(unsafe.Pointer(&r.exit[0])) }

// MMIO returns the MMIO exit data; a read's result goes in its Data. Valid
// when ExitReason is ExitMMIO.
func (r *RunData) MMIO() *MMIOExit { return (*MMIOExit)(unsafe.Pointer(&r.exit[0])) }

// FailEntry returns the failed-entry data.
func (r *RunData) FailEntry() *FailEntryExit {
	return (*FailEntryExit)(unsafe.Pointer(&r.exit[0]))
}

// Internal returns the internal-error data.
func (r *RunData) Internal() *InternalExit { return (*InternalExit)(unsafe.Pointer(&r.exit[0])) }

// SystemEvent returns the system-event data.
func (r *RunData) SystemEvent() *SystemEventExit {
	return (*SystemEventExit)(unsafe.Pointer(&r.exit[0]))
}

// IOData returns the bytes of a port-I/O exit: Size*Count bytes at
// DataOffset in the kvm_run area. An offset outside the area (which KVM never
// produces) yields an error rather than a fault.
func (c *VCPU) IOData() ([]byte, error) {
	io := c.RunData().IO()
	n := uint64(io.Size) * uint64(io.Count)
	if io.DataOffset > uint64(len(c.run)) || n > uint64(len(c.run))-io.DataOffset {
		return nil, fmt.Errorf("kvm: io data [%#x,+%d) outside kvm_run (%d bytes)", io.DataOffset, n, len(c.run))
	}
	return c.run[io.DataOffset : io.DataOffset+n], nil
}

// SetImmediateExit sets kvm_run.immediate_exit: while it is 1, KVM_RUN
// returns EINTR at once instead of entering the guest.
func (c *VCPU) SetImmediateExit(on bool) {
	var v uint8
	if on {
		v = 1
	}
	// A single-byte store; KVM reads it with READ_ONCE on entry.
	c.RunData().ImmediateExit = v
}
