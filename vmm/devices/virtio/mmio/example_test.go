package mmio_test

import (
	"github.com/embervm/ember/internal/eventfd"
	"github.com/embervm/ember/vmm/bus"
	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// wire is how a VMM puts a virtio device on its MMIO bus with an irqfd
// interrupt and ioeventfd notifications (see docs/devices.md).
func wire(vm *kvm.VM, mmioBus *bus.Bus, mem *memory.Guest, dev virtio.Device, base uint64, gsi uint32) (*mmio.Transport, string, error) {
	irq, err := eventfd.New()
	if err != nil {
		return nil, "", err
	}
	if err := vm.IRQFD(irq.Fd(), gsi); err != nil {
		return nil, "", err
	}
	tr, err := mmio.New(mmio.Config{Device: dev, Memory: mem, Interrupt: irq})
	if err != nil {
		return nil, "", err
	}
	if err := mmioBus.Insert(tr, base, mmio.Size); err != nil {
		return nil, "", err
	}
	err = tr.AttachIOEventFDs(base, func(e mmio.IOEvent) error {
		return vm.IOEventFD(kvm.IOEventFD{Addr: e.Addr, Len: e.Len, DataMatch: e.DataMatch,
			FD: int32(e.FD), Flags: kvm.IOEventFDFlagDataMatch})
	})
	if err != nil {
		return nil, "", err
	}
	return tr, mmio.Cmdline(mmio.Size, base, gsi), nil
}

// Example_wiring shows the calls a VMM makes; it needs /dev/kvm, so it is
// compiled but not run.
func Example_wiring() {
	var (
		vm  *kvm.VM
		b   = bus.New("mmio")
		mem *memory.Guest
		dev virtio.Device
	)
	_, _, _ = wire(vm, b, mem, dev, 0xd0000000, 5)
}
