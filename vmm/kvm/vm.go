package kvm

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	f        *os.File
	sys      *System
	mmapSize int
}

func (vm *VM) fd() uintptr { return vm.f.Fd() }

// Close closes the VM descriptor. The kernel frees the VM once every vCPU
// descriptor is closed too.
func (vm *VM) Close() error { return vm.f.Close() }

// CheckExtension asks the VM (not the system) about a capability; some
// answers, such as the vCPU limits, are per VM.
func (vm *VM) CheckExtension(c Cap) (int, error) {
	v, err := ioctl(vm.fd(), ioctlCheckExtension, uintptr(c))
	return int(v), wrap("KVM_CHECK_EXTENSION", err)
}

// SetUserMemoryRegion installs, changes or (with size 0) removes a memory slot.
func (vm *VM) SetUserMemoryRegion(r *UserspaceMemoryRegion) error {
	_, err := ioctlPtr(vm.fd(), ioctlSetUserMemoryRegion, unsafe.Pointer(r))
	if err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d gpa %#x size %#x: %w",
			r.Slot, r.GuestPhysAddr, r.MemorySize, err)
	}
	return nil
}

// SetTSSAddr sets the three-page region KVM needs for real-mode emulation on
// Intel hosts.
func (vm *VM) SetTSSAddr(addr uint32) error {
	_, err := ioctl(vm.fd(), ioctlSetTSSAddr, uintptr(addr))
	return wrap("KVM_SET_TSS_ADDR", err)
}

// SetIdentityMapAddr sets the one-page identity-map region (Intel hosts).
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	_, err := ioctlPtr(vm.fd(), ioctlSetIdentityMapAddr, unsafe.Pointer(&addr))
	return wrap("KVM_SET_IDENTITY_MAP_ADDR", err)
}

// CreateIRQChip creates the in-kernel PIC pair, IOAPIC and local APICs.
func (vm *VM) CreateIRQChip() error {
	_, err := ioctl(vm.fd(), ioctlCreateIRQChip, 0)
	return wrap("KVM_CREATE_IRQCHIP", err)
}

// CreatePIT2 creates the in-kernel i8254 timer.
func (vm *VM) CreatePIT2(cfg PITConfig) error {
	_, err := ioctlPtr(vm.fd(), ioctlCreatePIT2, unsafe.Pointer(&cfg))
	return wrap("KVM_CREATE_PIT2", err)
}

// IRQLine sets the level of an interrupt line of the in-kernel irqchip.
func (vm *VM) IRQLine(irq uint32, level bool) error {
	l := IRQLevel{IRQ: irq}
	if level {
		l.Level = 1
	}
	_, err := ioctlPtr(vm.fd(), ioctlIRQLine, unsafe.Pointer(&l))
	return wrap("KVM_IRQ_LINE", err)
}

// IRQFD binds an eventfd to a GSI: a write to the eventfd raises it.
func (vm *VM) IRQFD(eventfd int, gsi uint32) error {
	r := IRQFD{FD: uint32(eventfd), GSI: gsi}
	_, err := ioctlPtr(vm.fd(), ioctlIRQFD, unsafe.Pointer(&r))
	return wrap("KVM_IRQFD", err)
}

// RemoveIRQFD undoes IRQFD.
func (vm *VM) RemoveIRQFD(eventfd int, gsi uint32) error {
	r := IRQFD{FD: uint32(eventfd), GSI: gsi, Flags: IRQFDFlagDeassign}
	_, err := ioctlPtr(vm.fd(), ioctlIRQFD, unsafe.Pointer(&r))
	return wrap("KVM_IRQFD", err)
}

// IOEventFD registers an eventfd that KVM signals, without exiting to
// userspace, when the guest writes to addr (MMIO, or port I/O with
// IOEventFDFlagPIO). With IOEventFDFlagDataMatch only writes of datamatch
// count.
func (vm *VM) IOEventFD(e IOEventFD) error {
	_, err := ioctlPtr(vm.fd(), ioctlIOEventFD, unsafe.Pointer(&e))
	if err != nil {
		return fmt.Errorf("KVM_IOEVENTFD addr %#x: %w", e.Addr, err)
	}
	return nil
}

// GetClock returns the VM's kvmclock.
func (vm *VM) GetClock() (ClockData, error) {
	var c ClockData
	_, err := ioctlPtr(vm.fd(), ioctlGetClock, unsafe.Pointer(&c))
	return c, wrap("KVM_GET_CLOCK", err)
}

// SetClock sets the VM's kvmclock.
func (vm *VM) SetClock(c ClockData) error {
	_, err := ioctlPtr(vm.fd(), ioctlSetClock, unsafe.Pointer(&c))
	return wrap("KVM_SET_CLOCK", err)
}

// GetIRQChip reads the state of one in-kernel interrupt controller.
func (vm *VM) GetIRQChip(id uint32) (IRQChip, error) {
	c := IRQChip{ChipID: id}
	_, err := ioctlPtr(vm.fd(), ioctlGetIRQChip, unsafe.Pointer(&c))
	return c, wrap("KVM_GET_IRQCHIP", err)
}

// SetIRQChip writes the state of the in-kernel interrupt controller c.ChipID.
func (vm *VM) SetIRQChip(c IRQChip) error {
	_, err := ioctlPtr(vm.fd(), ioctlSetIRQChip, unsafe.Pointer(&c))
	return wrap("KVM_SET_IRQCHIP", err)
}

// GetPIT2 reads the in-kernel PIT's state.
func (vm *VM) GetPIT2() (PITState2, error) {
	var p PITState2
	_, err := ioctlPtr(vm.fd(), ioctlGetPIT2, unsafe.Pointer(&p))
	return p, wrap("KVM_GET_PIT2", err)
}

// SetPIT2 writes the in-kernel PIT's state.
func (vm *VM) SetPIT2(p PITState2) error {
	_, err := ioctlPtr(vm.fd(), ioctlSetPIT2, unsafe.Pointer(&p))
	return wrap("KVM_SET_PIT2", err)
}

// GetDirtyLog fills bitmap with the slot's dirty pages since the previous
// call (one bit per page, bit i of word i/64 for page i) and resets them.
// bitmap must hold at least one bit per page of the slot.
func (vm *VM) GetDirtyLog(slot uint32, bitmap []uint64) error {
	if len(bitmap) == 0 {
		return fmt.Errorf("KVM_GET_DIRTY_LOG: empty bitmap for slot %d", slot)
	}
	d := dirtyLog{Slot: slot, Bitmap: unsafe.Pointer(&bitmap[0])}
	_, err := ioctlPtr(vm.fd(), ioctlGetDirtyLog, unsafe.Pointer(&d))
	return wrap("KVM_GET_DIRTY_LOG", err)
}

// CreateVCPU creates vCPU id and maps its kvm_run area.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd(), ioctlCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	f := os.NewFile(fd, fmt.Sprintf("kvm-vcpu:%d", id))
	run, err := unix.Mmap(int(fd), 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kvm: mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{f: f, id: id, run: run}, nil
}
