package x86

import (
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// Control register and EFER bits used for the 64-bit entry.
const (
	CR0PE   = 1 << 0
	CR0ET   = 1 << 4
	CR0PG   = 1 << 31
	CR4PAE  = 1 << 5
	EFERLME = 1 << 8
	EFERLMA = 1 << 10
)

// SetupLongMode writes the boot GDT, IDT and identity page tables into mem
// and returns sregs (as read with KVM_GET_SREGS, so that APIC base and
// other state are kept) changed for the Linux 64-bit boot protocol: long
// mode with paging, flat __BOOT_CS/__BOOT_DS segments, CR3 at PML4Start.
func SetupLongMode(mem memory.Accessor, sregs kvm.Sregs) (kvm.Sregs, error) {
	if err := writeGDT(mem); err != nil {
		return sregs, err
	}
	if err := writePageTables(mem); err != nil {
		return sregs, err
	}
	return LongModeSregs(sregs), nil
}

// LongModeSregs returns sregs changed for the 64-bit entry, assuming the
// boot GDT and page tables are in memory (see SetupLongMode).
func LongModeSregs(sregs kvm.Sregs) kvm.Sregs {
	gdt := BootGDT()
	code := segmentFromEntry(gdt[BootCSSelector/8], BootCSSelector)
	data := segmentFromEntry(gdt[BootDSSelector/8], BootDSSelector)
	tss := segmentFromEntry(gdt[BootTSSelector/8], BootTSSelector)

	sregs.GDT = kvm.DTable{Base: GDTStart, Limit: GDTEntries*8 - 1}
	sregs.IDT = kvm.DTable{Base: IDTStart, Limit: 7}
	sregs.CS = code
	sregs.DS, sregs.ES, sregs.FS, sregs.GS, sregs.SS = data, data, data, data, data
	sregs.TR = tss
	sregs.LDT = kvm.Segment{Type: 2, Present: 1, Limit: 0xffff, Unusable: 1}

	sregs.CR3 = PML4Start
	sregs.CR4 |= CR4PAE
	sregs.CR0 = CR0PE | CR0ET | CR0PG
	sregs.EFER |= EFERLME | EFERLMA
	return sregs
}

// BootRegs returns the general-purpose registers for the 64-bit entry:
// RIP at the kernel entry point, RSI at the zero page, a stack below it and
// RFLAGS with only the reserved bit set.
func BootRegs(entry uint64) kvm.Regs {
	return kvm.Regs{
		RIP:    entry,
		RSI:    ZeroPageStart,
		RSP:    BootStackPointer,
		RBP:    BootStackPointer,
		RFLAGS: 1 << 1,
	}
}

// BootFPU returns the FPU state at boot: x87 control word 0x37f (all
// exceptions masked, extended precision) and MXCSR 0x1f80 (all SSE
// exceptions masked), as after FNINIT and a reset.
func BootFPU() kvm.FPU {
	return kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
}
