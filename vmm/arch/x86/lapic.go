package x86

import (
	"encoding/binary"

	"github.com/embervm/ember/vmm/kvm"
)

// Local APIC register offsets in kvm.LAPICState.Regs and LVT delivery modes.
const (
	APICRegLVTLINT0 = 0x350
	APICRegLVTLINT1 = 0x360
	APICModeNMI     = 0x4
	APICModeExtINT  = 0x7
	apicModeShift   = 8
	apicModeMask    = 0x7 << apicModeShift
)

// lapicReg reads a 32-bit local APIC register.
func lapicReg(l *kvm.LAPICState, off int) uint32 {
	return binary.LittleEndian.Uint32(l.Regs[off:])
}

// setLAPICReg writes a 32-bit local APIC register.
func setLAPICReg(l *kvm.LAPICState, off int, v uint32) {
	binary.LittleEndian.PutUint32(l.Regs[off:], v)
}

// LAPICDeliveryMode returns the delivery mode of an LVT register.
func LAPICDeliveryMode(l *kvm.LAPICState, off int) uint32 {
	return (lapicReg(l, off) & apicModeMask) >> apicModeShift
}

// SetupLINTs configures the local APIC as a PC's firmware leaves it: LINT0
// in ExtINT mode (the 8259 PIC's output, for virtual wire mode) and LINT1
// in NMI mode. Other LVT bits (mask, trigger) are kept. l is the state from
// KVM_GET_LAPIC, to be set back with KVM_SET_LAPIC.
func SetupLINTs(l *kvm.LAPICState) {
	for _, r := range []struct {
		off  int
		mode uint32
	}{{APICRegLVTLINT0, APICModeExtINT}, {APICRegLVTLINT1, APICModeNMI}} {
		v := lapicReg(l, r.off)
		setLAPICReg(l, r.off, v&^apicModeMask|r.mode<<apicModeShift)
	}
}
