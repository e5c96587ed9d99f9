package vmm

import (
	"github.com/embervm/ember/vmm/devices"
	"github.com/embervm/ember/vmm/kvm"
)

// LineInterrupt pulses a line of the in-kernel irqchip (KVM_IRQ_LINE high
// then low): an edge for the PIC and IOAPIC, as legacy ISA devices raise.
type LineInterrupt struct {
	VM  *kvm.VM
	IRQ uint32
}

var _ devices.Interrupt = (*LineInterrupt)(nil)

// Trigger implements devices.Interrupt.
func (l *LineInterrupt) Trigger() error {
	if err := l.VM.IRQLine(l.IRQ, true); err != nil {
		return err
	}
	return l.VM.IRQLine(l.IRQ, false)
}
