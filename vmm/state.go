package vmm

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/embervm/ember/vmm/arch/x86"
	"github.com/embervm/ember/vmm/kvm"
)

// CPUState is everything KVM holds for one vCPU, as a snapshot stores it.
// Fields are listed in save order (Firecracker's, which KVM requires).
type CPUState struct {
	ID        int
	CPUID     []kvm.CPUIDEntry
	MPState   kvm.MPState
	Regs      kvm.Regs
	Sregs     kvm.Sregs
	XSave     *kvm.XSave
	XCRs      kvm.XCRs
	DebugRegs kvm.DebugRegs
	LAPIC     *kvm.LAPICState
	MSRs      []kvm.MSREntry
	Events    kvm.VCPUEvents
	TSCKHz    uint32
}

// VMState is the VM-wide state KVM holds: kvmclock, PIT and interrupt
// controllers. IRQChips is empty for a machine without an in-kernel irqchip.
type VMState struct {
	Clock    kvm.ClockData
	PIT      *kvm.PITState2
	IRQChips []kvm.IRQChip
}

// MachineState is a paused machine's complete KVM state (memory and device
// models are saved separately).
type MachineState struct {
	VM   VMState
	CPUs []CPUState
}

// msrIndices returns the MSRs to save: KVM's index list, sorted so that
// MSR_IA32_TSC (0x10) comes before MSR_IA32_TSC_DEADLINE (0x6e0), as
// restoring needs.
func msrIndices(sys *kvm.System) ([]uint32, error) {
	idx, err := sys.MSRIndexList()
	if err != nil {
		return nil, err
	}
	slices.Sort(idx)
	return slices.Compact(idx), nil
}

// readMSRs reads every MSR in idx that KVM will read, dropping (and
// continuing past) those it refuses.
func readMSRs(c *kvm.VCPU, idx []uint32) ([]kvm.MSREntry, error) {
	var out []kvm.MSREntry
	for len(idx) > 0 {
		es := make([]kvm.MSREntry, len(idx))
		for i, x := range idx {
			es[i].Index = x
		}
		n, err := c.GetMSRs(es)
		if err != nil {
			return nil, err
		}
		out = append(out, es[:n]...)
		if n == len(idx) {
			break
		}
		idx = idx[n+1:] // skip the MSR KVM could not read
	}
	return out, nil
}

// saveCPU reads one vCPU's state in Firecracker's order: MP_STATE first
// (it may flush pending events into the other state), VCPU_EVENTS last.
func saveCPU(c *kvm.VCPU, msrs []uint32) (CPUState, error) {
	s := CPUState{ID: c.ID()}
	var err error
	if s.CPUID, err = c.GetCPUID2(); err != nil {
		return s, err
	}
	if s.MPState, err = c.GetMPState(); err != nil {
		return s, err
	}
	if s.Regs, err = c.GetRegs(); err != nil {
		return s, err
	}
	if s.Sregs, err = c.GetSregs(); err != nil {
		return s, err
	}
	if s.XSave, err = c.GetXSave(); err != nil {
		return s, err
	}
	if s.XCRs, err = c.GetXCRs(); err != nil {
		return s, err
	}
	if s.DebugRegs, err = c.GetDebugRegs(); err != nil {
		return s, err
	}
	if s.LAPIC, err = c.GetLAPIC(); err != nil {
		return s, err
	}
	if s.MSRs, err = readMSRs(c, msrs); err != nil {
		return s, err
	}
	if s.Events, err = c.GetVCPUEvents(); err != nil {
		return s, err
	}
	if s.TSCKHz, err = c.GetTSCKHz(); err != nil {
		return s, err
	}
	return s, nil
}

// ErrStateMismatch: saved state does not fit the machine it is restored into.
var ErrStateMismatch = errors.New("vmm: state does not match machine")

// restoreCPU writes one vCPU's state in the order KVM needs: CPUID first
// (the rest is validated against it), SREGS before LAPIC (APIC base),
// LAPIC before MSRS (x2APIC), MSRs in saved order (TSC before
// TSC_DEADLINE), VCPU_EVENTS last.
func restoreCPU(c *kvm.VCPU, s *CPUState, tscControl bool) error {
	if err := c.SetCPUID2(s.CPUID); err != nil {
		return err
	}
	if s.TSCKHz != 0 {
		if cur, err := c.GetTSCKHz(); err == nil && cur != s.TSCKHz {
			if !tscControl {
				return fmt.Errorf("%w: TSC runs at %d kHz, snapshot at %d kHz and KVM cannot scale it",
					ErrStateMismatch, cur, s.TSCKHz)
			}
			if err := c.SetTSCKHz(s.TSCKHz); err != nil {
				return err
			}
		}
	}
	if err := c.SetMPState(s.MPState); err != nil {
		return err
	}
	if err := c.SetRegs(s.Regs); err != nil {
		return err
	}
	if err := c.SetSregs(restoredSregs(s)); err != nil {
		return err
	}
	if s.XSave == nil || s.LAPIC == nil {
		return fmt.Errorf("%w: vCPU %d state lacks XSAVE or LAPIC", ErrStateMismatch, s.ID)
	}
	if err := c.SetXSave(s.XSave); err != nil {
		return err
	}
	if err := c.SetXCRs(s.XCRs); err != nil {
		return err
	}
	if err := c.SetDebugRegs(s.DebugRegs); err != nil {
		return err
	}
	if err := c.SetLAPIC(s.LAPIC); err != nil {
		return err
	}
	n, err := c.SetMSRs(s.MSRs)
	if err != nil {
		return err
	}
	if n != len(s.MSRs) {
		return fmt.Errorf("%w: KVM refused MSR %#x (set %d of %d)", ErrStateMismatch, s.MSRs[n].Index, n, len(s.MSRs))
	}
	return c.SetVCPUEvents(s.Events)
}

// Task register types (system segment descriptor types).
const (
	tssAvailable64 = 9
	tssBusy64      = 11
)

// restoredSregs returns the special registers to write back for s.
//
// On AMD, KVM_GET_SREGS reports the task register as a busy TSS (type 11)
// although the VMCB, which holds what the CPU loads and saves, has it as
// available (type 9): KVM's SVM code ORs the busy bit in for every read,
// to look like VMX. Written back as is, the restored vCPU would run with a
// TR its guest never loaded. A CPU that checks the TR type when it
// consults the TSS's I/O permission bitmap (QEMU's emulated SVM does, and
// so the nested lab) then refuses every port access from user mode that
// ioperm(2) allowed: after a restore, the agent's boot-marker OUT took a
// #GP and PID 1 died with SIGSEGV. So on AMD the TR goes back as the VMCB
// had it; VMX (whose TR really is busy, and must be for VM entry) gets it
// unchanged.
func restoredSregs(s *CPUState) kvm.Sregs {
	sr := s.Sregs
	if x86.IsAMD(s.CPUID) && sr.TR.Type == tssBusy64 {
		sr.TR.Type = tssAvailable64
	}
	return sr
}

// SaveState reads the KVM state of the VM and every vCPU. Every vCPU must
// be paused (or not yet started); a running one refuses with ErrRunning.
func (m *Machine) SaveState(ctx context.Context) (*MachineState, error) {
	for _, c := range m.vcpus {
		if c.State() == VCPURunning {
			return nil, fmt.Errorf("vCPU %d: %w: pause the machine first", c.ID(), ErrRunning)
		}
	}
	msrs, err := msrIndices(m.sys)
	if err != nil {
		return nil, err
	}
	st := &MachineState{}
	for _, c := range m.vcpus {
		var cs CPUState
		err := c.Do(ctx, func(fd *kvm.VCPU) error {
			var err error
			cs, err = saveCPU(fd, msrs)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("saving vCPU %d: %w", c.ID(), err)
		}
		st.CPUs = append(st.CPUs, cs)
	}
	if st.VM, err = m.saveVM(); err != nil {
		return nil, err
	}
	return st, nil
}

func (m *Machine) saveVM() (VMState, error) {
	var s VMState
	var err error
	if s.Clock, err = m.vm.GetClock(); err != nil {
		return s, err
	}
	if m.cfg.NoIRQChip {
		return s, nil
	}
	pit, err := m.vm.GetPIT2()
	if err != nil {
		return s, err
	}
	s.PIT = &pit
	for _, id := range []uint32{kvm.IRQChipPICMaster, kvm.IRQChipPICSlave, kvm.IRQChipIOAPIC} {
		c, err := m.vm.GetIRQChip(id)
		if err != nil {
			return s, err
		}
		s.IRQChips = append(s.IRQChips, c)
	}
	return s, nil
}

// RestoreState writes saved KVM state into this machine: the VM-wide state
// first (PIT, clock, irqchips), then each vCPU's. The vCPUs must not be
// running, and the machine must have as many vCPUs as the state.
func (m *Machine) RestoreState(ctx context.Context, st *MachineState) error {
	if len(st.CPUs) != len(m.vcpus) {
		return fmt.Errorf("%w: state has %d vCPUs, machine %d", ErrStateMismatch, len(st.CPUs), len(m.vcpus))
	}
	if (len(st.VM.IRQChips) == 0) != m.cfg.NoIRQChip {
		return fmt.Errorf("%w: in-kernel irqchip present in one but not the other", ErrStateMismatch)
	}
	for _, c := range m.vcpus {
		if c.State() == VCPURunning {
			return fmt.Errorf("vCPU %d: %w", c.ID(), ErrRunning)
		}
	}
	if err := m.restoreVM(&st.VM); err != nil {
		return err
	}
	tscControl, _ := m.sys.CheckExtension(kvm.CapTSCControl)
	for i, c := range m.vcpus {
		cs := &st.CPUs[i]
		if cs.ID != c.ID() {
			return fmt.Errorf("%w: state %d is for vCPU %d", ErrStateMismatch, i, cs.ID)
		}
		err := c.Do(ctx, func(fd *kvm.VCPU) error { return restoreCPU(fd, cs, tscControl > 0) })
		if err != nil {
			return fmt.Errorf("restoring vCPU %d: %w", c.ID(), err)
		}
	}
	return nil
}

func (m *Machine) restoreVM(s *VMState) error {
	if s.PIT != nil {
		if err := m.vm.SetPIT2(*s.PIT); err != nil {
			return err
		}
	}
	clock := s.Clock
	// Only the clock value is restored; the flags describe how the source
	// host read it and are not all accepted back.
	clock.Flags = 0
	if err := m.vm.SetClock(clock); err != nil {
		return err
	}
	for _, c := range s.IRQChips {
		if err := m.vm.SetIRQChip(c); err != nil {
			return err
		}
	}
	return nil
}
