package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VCPU is a KVM virtual CPU file descriptor and its mapped kvm_run area.
//
// KVM allows vCPU ioctls from any thread, but ember issues them all from the
// vCPU's own locked OS thread (package vmm) so that KVM_RUN and the state
// ioctls never race.
type VCPU struct {
	f   *os.File
	id  int
	run []byte
}

func (c *VCPU) fd() uintptr { return c.f.Fd() }

// ID returns the vCPU's index (its initial APIC id).
func (c *VCPU) ID() int { return c.id }

// Close unmaps kvm_run and closes the descriptor.
func (c *VCPU) Close() error {
	var err error
	if c.run != nil {
		err = unix.Munmap(c.run)
		c.run = nil
	}
	return errors.Join(err, c.f.Close())
}

// Run enters the guest with KVM_RUN. It returns when the guest exits to
// userspace (see RunData) or, with an error for which IsInterrupted is true,
// when a signal or immediate_exit interrupted it.
func (c *VCPU) Run() error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, c.fd(), ioctlRun, 0)
	if errno != 0 {
		return wrap("KVM_RUN", errno)
	}
	return nil
}

// SetSignalMask sets the signal mask the thread has while in KVM_RUN
// (KVM_SET_SIGNAL_MASK), for the 64 signals of the kernel's sigset; nil
// removes it, so KVM_RUN keeps the thread's own mask.
func (c *VCPU) SetSignalMask(mask *uint64) error {
	if mask == nil {
		if _, err := ioctl(c.fd(), ioctlSetSignalMask, 0); err != nil {
			return wrap("KVM_SET_SIGNAL_MASK", err)
		}
		return nil
	}
	var b [4 + 8]byte // struct kvm_signal_mask: len, then the sigset
	binary.NativeEndian.PutUint32(b[0:], 8)
	binary.NativeEndian.PutUint64(b[4:], *mask)
	if _, err := ioctlPtr(c.fd(), ioctlSetSignalMask, unsafe.Pointer(&b[0])); err != nil {
		return wrap("KVM_SET_SIGNAL_MASK", err)
	}
	return nil
}

// RunData returns the vCPU's shared kvm_run area.
func (c *VCPU) RunData() *RunData { return (*RunData)(unsafe.Pointer(&c.run[0])) }

// GetRegs reads the general-purpose registers.
func (c *VCPU) GetRegs() (Regs, error) {
	var r Regs
	_, err := ioctlPtr(c.fd(), ioctlGetRegs, unsafe.Pointer(&r))
	return r, wrap("KVM_GET_REGS", err)
}

// SetRegs writes the general-purpose registers.
func (c *VCPU) SetRegs(r Regs) error {
	_, err := ioctlPtr(c.fd(), ioctlSetRegs, unsafe.Pointer(&r))
	return wrap("KVM_SET_REGS", err)
}

// GetSregs reads the special registers.
func (c *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlPtr(c.fd(), ioctlGetSregs, unsafe.Pointer(&s))
	return s, wrap("KVM_GET_SREGS", err)
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlPtr(c.fd(), ioctlSetSregs, unsafe.Pointer(&s))
	return wrap("KVM_SET_SREGS", err)
}

// GetFPU reads the legacy FPU state.
func (c *VCPU) GetFPU() (FPU, error) {
	var f FPU
	_, err := ioctlPtr(c.fd(), ioctlGetFPU, unsafe.Pointer(&f))
	return f, wrap("KVM_GET_FPU", err)
}

// SetFPU writes the legacy FPU state.
func (c *VCPU) SetFPU(f FPU) error {
	_, err := ioctlPtr(c.fd(), ioctlSetFPU, unsafe.Pointer(&f))
	return wrap("KVM_SET_FPU", err)
}

// GetXSave reads the XSAVE area (the legacy 4 KiB form).
func (c *VCPU) GetXSave() (*XSave, error) {
	x := new(XSave)
	_, err := ioctlPtr(c.fd(), ioctlGetXSave, unsafe.Pointer(x))
	return x, wrap("KVM_GET_XSAVE", err)
}

// SetXSave writes the XSAVE area.
func (c *VCPU) SetXSave(x *XSave) error {
	_, err := ioctlPtr(c.fd(), ioctlSetXSave, unsafe.Pointer(x))
	return wrap("KVM_SET_XSAVE", err)
}

// GetXCRs reads the extended control registers (XCR0).
func (c *VCPU) GetXCRs() (XCRs, error) {
	var x XCRs
	_, err := ioctlPtr(c.fd(), ioctlGetXCRs, unsafe.Pointer(&x))
	return x, wrap("KVM_GET_XCRS", err)
}

// SetXCRs writes the extended control registers.
func (c *VCPU) SetXCRs(x XCRs) error {
	_, err := ioctlPtr(c.fd(), ioctlSetXCRs, unsafe.Pointer(&x))
	return wrap("KVM_SET_XCRS", err)
}

// GetLAPIC reads the local APIC's registers.
func (c *VCPU) GetLAPIC() (*LAPICState, error) {
	l := new(LAPICState)
	_, err := ioctlPtr(c.fd(), ioctlGetLAPIC, unsafe.Pointer(l))
	return l, wrap("KVM_GET_LAPIC", err)
}

// SetLAPIC writes the local APIC's registers.
func (c *VCPU) SetLAPIC(l *LAPICState) error {
	_, err := ioctlPtr(c.fd(), ioctlSetLAPIC, unsafe.Pointer(l))
	return wrap("KVM_SET_LAPIC", err)
}

// GetMPState reads the multiprocessing state.
func (c *VCPU) GetMPState() (MPState, error) {
	var m MPState
	_, err := ioctlPtr(c.fd(), ioctlGetMPState, unsafe.Pointer(&m))
	return m, wrap("KVM_GET_MP_STATE", err)
}

// SetMPState writes the multiprocessing state.
func (c *VCPU) SetMPState(m MPState) error {
	_, err := ioctlPtr(c.fd(), ioctlSetMPState, unsafe.Pointer(&m))
	return wrap("KVM_SET_MP_STATE", err)
}

// GetVCPUEvents reads pending exceptions, interrupts and NMIs.
func (c *VCPU) GetVCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	_, err := ioctlPtr(c.fd(), ioctlGetVCPUEvents, unsafe.Pointer(&e))
	return e, wrap("KVM_GET_VCPU_EVENTS", err)
}

// SetVCPUEvents writes pending exceptions, interrupts and NMIs.
func (c *VCPU) SetVCPUEvents(e VCPUEvents) error {
	_, err := ioctlPtr(c.fd(), ioctlSetVCPUEvents, unsafe.Pointer(&e))
	return wrap("KVM_SET_VCPU_EVENTS", err)
}

// GetDebugRegs reads the debug registers.
func (c *VCPU) GetDebugRegs() (DebugRegs, error) {
	var d DebugRegs
	_, err := ioctlPtr(c.fd(), ioctlGetDebugRegs, unsafe.Pointer(&d))
	return d, wrap("KVM_GET_DEBUGREGS", err)
}

// SetDebugRegs writes the debug registers.
func (c *VCPU) SetDebugRegs(d DebugRegs) error {
	_, err := ioctlPtr(c.fd(), ioctlSetDebugRegs, unsafe.Pointer(&d))
	return wrap("KVM_SET_DEBUGREGS", err)
}

// GetTSCKHz returns the vCPU's TSC frequency in kHz.
func (c *VCPU) GetTSCKHz() (uint32, error) {
	v, err := ioctl(c.fd(), ioctlGetTSCKHz, 0)
	return uint32(v), wrap("KVM_GET_TSC_KHZ", err)
}

// SetTSCKHz sets the vCPU's TSC frequency (needs KVM_CAP_TSC_CONTROL).
func (c *VCPU) SetTSCKHz(khz uint32) error {
	_, err := ioctl(c.fd(), ioctlSetTSCKHz, uintptr(khz))
	return wrap("KVM_SET_TSC_KHZ", err)
}

// KVMClockCtrl tells the guest's kvmclock that the vCPU was paused, so its
// soft-lockup watchdog does not fire after a long pause.
func (c *VCPU) KVMClockCtrl() error {
	_, err := ioctl(c.fd(), ioctlKVMClockCtrl, 0)
	return wrap("KVM_KVMCLOCK_CTRL", err)
}

// SetCPUID2 sets the CPUID leaves the guest sees.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	if len(entries) > maxEntries {
		return fmt.Errorf("KVM_SET_CPUID2: %w (%d > %d)", ErrTooMany, len(entries), maxEntries)
	}
	var buf struct {
		Nent    uint32
		_       uint32
		Entries [maxEntries]CPUIDEntry
	}
	buf.Nent = uint32(len(entries))
	copy(buf.Entries[:], entries)
	_, err := ioctlPtr(c.fd(), ioctlSetCPUID2, unsafe.Pointer(&buf))
	return wrap("KVM_SET_CPUID2", err)
}

// GetCPUID2 returns the CPUID leaves set on the vCPU.
func (c *VCPU) GetCPUID2() ([]CPUIDEntry, error) {
	var buf struct {
		Nent    uint32
		_       uint32
		Entries [maxEntries]CPUIDEntry
	}
	buf.Nent = maxEntries
	if _, err := ioctlPtr(c.fd(), ioctlGetCPUID2, unsafe.Pointer(&buf)); err != nil {
		return nil, wrap("KVM_GET_CPUID2", err)
	}
	// Some KVMs (Debian 6.1's kvm-amd, in the nested lab) answer without
	// updating nent, returning the whole zeroed buffer. No real entry is all
	// zero (leaf 0 names at least one further leaf), so drop those: setting
	// them back would fail with E2BIG and hide the CPU vendor.
	out := make([]CPUIDEntry, 0, buf.Nent)
	for _, e := range buf.Entries[:min(buf.Nent, maxEntries)] {
		if e.Function|e.Index|e.Flags|e.EAX|e.EBX|e.ECX|e.EDX != 0 {
			out = append(out, e)
		}
	}
	return out, nil
}

// msrBuf is struct kvm_msrs with room for maxEntries entries.
type msrBuf struct {
	N       uint32
	_       uint32
	Entries [maxEntries]MSREntry
}

// GetMSRs reads the MSRs named by entries[i].Index into entries[i].Data. KVM
// stops at the first MSR it cannot read; GetMSRs returns how many it read.
func (c *VCPU) GetMSRs(entries []MSREntry) (int, error) {
	if len(entries) > maxEntries {
		return 0, fmt.Errorf("KVM_GET_MSRS: %w (%d > %d)", ErrTooMany, len(entries), maxEntries)
	}
	b := new(msrBuf)
	b.N = uint32(len(entries))
	copy(b.Entries[:], entries)
	n, err := ioctlPtr(c.fd(), ioctlGetMSRs, unsafe.Pointer(b))
	if err != nil {
		return 0, wrap("KVM_GET_MSRS", err)
	}
	copy(entries, b.Entries[:n])
	return int(n), nil
}

// SetMSRs writes entries. KVM stops at the first MSR it refuses; SetMSRs
// returns how many it wrote.
func (c *VCPU) SetMSRs(entries []MSREntry) (int, error) {
	if len(entries) > maxEntries {
		return 0, fmt.Errorf("KVM_SET_MSRS: %w (%d > %d)", ErrTooMany, len(entries), maxEntries)
	}
	b := new(msrBuf)
	b.N = uint32(len(entries))
	copy(b.Entries[:], entries)
	n, err := ioctlPtr(c.fd(), ioctlSetMSRs, unsafe.Pointer(b))
	return int(n), wrap("KVM_SET_MSRS", err)
}
