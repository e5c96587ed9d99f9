package testguest

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/arch/x86"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// GDT entries (flat segments; 64-bit code has L set).
var gdt = []uint64{
	0,                  // null
	0x00af9b000000ffff, // 0x08 kernel code, DPL0, 64-bit
	0x00cf93000000ffff, // 0x10 kernel data, DPL0
	0x00affb000000ffff, // 0x18 user code, DPL3, 64-bit
	0x00cff3000000ffff, // 0x20 user data, DPL3
}

// writeTables writes the GDT (with a TSS descriptor), the TSS and identity
// page tables for [0, 4 GiB) with 2 MiB user-accessible pages.
func writeTables(mem *memory.Guest) error {
	b := make([]byte, 0, 8*(len(gdt)+2))
	for _, d := range gdt {
		b = binary.LittleEndian.AppendUint64(b, d)
	}
	// 16-byte available 64-bit TSS descriptor at 0x28.
	const limit = tssSize - 1
	lo := uint64(limit&0xffff) | uint64(TSSAddr&0xffffff)<<16 | uint64(0x89)<<40 | uint64(TSSAddr>>24&0xff)<<56
	b = binary.LittleEndian.AppendUint64(b, lo)
	b = binary.LittleEndian.AppendUint64(b, uint64(TSSAddr>>32))
	if err := mem.WriteAt(b, GDTAddr); err != nil {
		return err
	}
	// The TSS carries an all-zero I/O permission bitmap (every port
	// allowed) as well as IOPL 3 in RFLAGS: KVM backends that run CPL3 code
	// natively may honour only one of the two.
	tss := make([]byte, tssSize)
	binary.LittleEndian.PutUint64(tss[4:], StackTop) // RSP0
	binary.LittleEndian.PutUint16(tss[102:], 104)    // I/O bitmap offset
	tss[tssSize-1] = 0xff                            // bitmap terminator
	if err := mem.WriteAt(tss, TSSAddr); err != nil {
		return err
	}
	const present, rw, user, huge = 1, 2, 4, 0x80
	if err := mem.WriteUint64(PML4Addr, PDPTAddr|present|rw|user); err != nil {
		return err
	}
	for i := uint64(0); i < 4; i++ {
		pd := uint64(PDAddr) + i*0x1000
		if err := mem.WriteUint64(PDPTAddr+8*i, pd|present|rw|user); err != nil {
			return err
		}
		table := make([]byte, 4096)
		for j := uint64(0); j < 512; j++ {
			addr := (i*512 + j) << 21
			binary.LittleEndian.PutUint64(table[8*j:], addr|present|rw|user|huge)
		}
		if err := mem.WriteAt(table, pd); err != nil {
			return err
		}
	}
	return nil
}

func segment(sel uint16, code bool, dpl uint8) kvm.Segment {
	s := kvm.Segment{Limit: 0xfffff, Selector: sel, Present: 1, DPL: dpl, S: 1, G: 1}
	if code {
		s.Type, s.L = 11, 1 // execute/read, accessed; 64-bit
	} else {
		s.Type, s.DB = 3, 1 // read/write, accessed
	}
	return s
}

// entryState returns the registers that start img in long mode.
func entryState(img *Image, s kvm.Sregs) (kvm.Sregs, kvm.Regs) {
	cs, ds, dpl := uint16(selUserCode), uint16(selUserData), uint8(3)
	if img.CPL0 {
		cs, ds, dpl = selKernelCode, selKernelData, 0
	}
	s.CS = segment(cs, true, dpl)
	s.DS, s.ES, s.FS, s.GS, s.SS = segment(ds, false, dpl), segment(ds, false, dpl),
		segment(ds, false, dpl), segment(ds, false, dpl), segment(ds, false, dpl)
	s.TR = kvm.Segment{Base: TSSAddr, Limit: tssSize - 1, Selector: selTSS, Type: 11, Present: 1}
	s.LDT = kvm.Segment{Unusable: 1}
	s.GDT = kvm.DTable{Base: GDTAddr, Limit: uint16(8*(len(gdt)+2) - 1)}
	s.IDT = kvm.DTable{} // no handlers: an exception is a triple fault (KVM_EXIT_SHUTDOWN)
	s.CR3 = PML4Addr
	s.CR4 = 1<<5 | 1<<9 | 1<<10                       // PAE, OSFXSR, OSXMMEXCPT
	s.CR0 = 1<<0 | 1<<1 | 1<<4 | 1<<5 | 1<<16 | 1<<31 // PE MP ET NE WP PG
	s.EFER = 1<<8 | 1<<10                             // LME LMA
	// IOPL 3 lets CPL3 code reach the test ports; IF stays clear.
	r := kvm.Regs{RIP: img.Entry, RSP: StackTop, RFLAGS: 0x2 | 3<<12}
	return s, r
}

// Load writes img and its tables into m's memory, gives every vCPU KVM's
// supported CPUID, and points vCPU 0 at the entry.
func Load(ctx context.Context, m *vmm.Machine, img *Image) error {
	if err := img.Validate(); err != nil {
		return err
	}
	if m.Memory().Size() < img.Memory {
		return fmt.Errorf("%w: image wants %d bytes, machine has %d", ErrBadImage, img.Memory, m.Memory().Size())
	}
	if err := writeTables(m.Memory()); err != nil {
		return err
	}
	if err := m.Memory().WriteAt(img.Code, img.Load); err != nil {
		return fmt.Errorf("%w: %w", ErrBadImage, err)
	}
	cpuid, err := m.System().SupportedCPUID()
	if err != nil {
		return err
	}
	for _, c := range m.VCPUs() {
		err := c.Do(ctx, func(fd *kvm.VCPU) error {
			if err := fd.SetCPUID2(cpuid); err != nil {
				return err
			}
			if c.ID() != 0 {
				return nil
			}
			s, err := fd.GetSregs()
			if err != nil {
				return err
			}
			s, r := entryState(img, s)
			if x86.IsAMD(cpuid) {
				// The TSS as an AMD CPU holds it after LTR: available,
				// not busy as KVM reports it (see vmm restoredSregs).
				// An emulated SVM that checks the type refuses CPL3
				// port access through the I/O bitmap otherwise.
				s.TR.Type = 9
			}
			if err := fd.SetSregs(s); err != nil {
				return err
			}
			return fd.SetRegs(r)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
