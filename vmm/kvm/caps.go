package kvm

import (
	"errors"
	"fmt"
)

// Cap is a KVM capability number (KVM_CAP_*).
type Cap uint32

// Capabilities ember checks for.
const (
	CapIRQChip            Cap = 0
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNrVCPUs            Cap = 9
	CapMPState            Cap = 14
	CapIRQFD              Cap = 32
	CapPIT2               Cap = 33
	CapIOEventFD          Cap = 36
	CapSetIdentityMapAddr Cap = 37
	CapAdjustClock        Cap = 39
	CapVCPUEvents         Cap = 41
	CapDebugRegs          Cap = 50
	CapXSave              Cap = 55
	CapXCRs               Cap = 56
	CapTSCControl         Cap = 60
	CapGetTSCKHz          Cap = 61
	CapMaxVCPUs           Cap = 66
	CapKVMClockCtrl       Cap = 76
	CapReadonlyMem        Cap = 81
	CapImmediateExit      Cap = 136
	CapManualDirtyLog2    Cap = 168
	CapXSave2             Cap = 208
)

var capNames = map[Cap]string{
	CapIRQChip: "KVM_CAP_IRQCHIP", CapUserMemory: "KVM_CAP_USER_MEMORY",
	CapSetTSSAddr: "KVM_CAP_SET_TSS_ADDR", CapExtCPUID: "KVM_CAP_EXT_CPUID",
	CapNrVCPUs: "KVM_CAP_NR_VCPUS", CapMPState: "KVM_CAP_MP_STATE",
	CapIRQFD: "KVM_CAP_IRQFD", CapPIT2: "KVM_CAP_PIT2",
	CapIOEventFD: "KVM_CAP_IOEVENTFD", CapSetIdentityMapAddr: "KVM_CAP_SET_IDENTITY_MAP_ADDR",
	CapAdjustClock: "KVM_CAP_ADJUST_CLOCK", CapVCPUEvents: "KVM_CAP_VCPU_EVENTS",
	CapDebugRegs: "KVM_CAP_DEBUGREGS", CapXSave: "KVM_CAP_XSAVE", CapXCRs: "KVM_CAP_XCRS",
	CapTSCControl: "KVM_CAP_TSC_CONTROL", CapGetTSCKHz: "KVM_CAP_GET_TSC_KHZ",
	CapMaxVCPUs: "KVM_CAP_MAX_VCPUS", CapKVMClockCtrl: "KVM_CAP_KVMCLOCK_CTRL",
	CapReadonlyMem: "KVM_CAP_READONLY_MEM", CapImmediateExit: "KVM_CAP_IMMEDIATE_EXIT",
	CapManualDirtyLog2: "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", CapXSave2: "KVM_CAP_XSAVE2",
}

// String returns the capability's name as in <linux/kvm.h>.
func (c Cap) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("KVM_CAP(%d)", uint32(c))
}

// RequiredCaps are the capabilities without which ember cannot run a VM or
// save and restore one.
var RequiredCaps = []Cap{
	CapIRQChip, CapUserMemory, CapSetTSSAddr, CapExtCPUID, CapMPState,
	CapIRQFD, CapPIT2, CapIOEventFD, CapAdjustClock, CapVCPUEvents,
	CapDebugRegs, CapXSave, CapXCRs, CapGetTSCKHz, CapImmediateExit,
}

// ErrMissingCap is returned (wrapped in a *MissingCapError) when the host's
// KVM lacks a capability ember needs.
var ErrMissingCap = errors.New("kvm: missing capability")

// MissingCapError names the capability that the host's KVM lacks.
type MissingCapError struct{ Cap Cap }

func (e *MissingCapError) Error() string {
	return fmt.Sprintf("kvm: this host's KVM lacks %s (capability %d)", e.Cap, uint32(e.Cap))
}

// Is makes errors.Is(err, ErrMissingCap) true.
func (e *MissingCapError) Is(target error) bool { return target == ErrMissingCap }
