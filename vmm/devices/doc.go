// Package devices holds what device models share: the interrupt trigger
// they are given instead of reaching into the VM. The models themselves live
// in subpackages (serial, i8042, virtio, ...), each implementing bus.Device.
package devices

// Interrupt is injected into a device so that it can raise its interrupt
// without knowing how the VM delivers it (KVM_IRQ_LINE, an irqfd, a test
// recorder).
type Interrupt interface {
	// Trigger raises the interrupt (an edge, or a pulse on a level line).
	Trigger() error
}
