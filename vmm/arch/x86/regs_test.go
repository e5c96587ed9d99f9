package x86

import (
	"encoding/binary"
	"testing"

	"github.com/embervm/ember/vmm/kvm"
)

func TestGDTEntries(t *testing.T) {
	gdt := BootGDT()
	// Well-known encodings of flat 64-bit code, flat data and a busy TSS.
	want := [GDTEntries]uint64{0, 0, 0x00af9b000000ffff, 0x00cf93000000ffff, 0x008f8b000000ffff}
	if gdt != want {
		t.Fatalf("GDT = %#x, want %#x", gdt, want)
	}
	if e := gdtEntry(0xc093, 0x12345678, 0xabcde); segmentFromEntry(e, 8).Base != 0x12345678 || segmentFromEntry(e, 8).Limit != 0xabcde {
		t.Fatalf("base/limit round trip: %+v", segmentFromEntry(e, 8))
	}
}

func TestPageTables(t *testing.T) {
	pt := BuildPageTables()
	le := binary.LittleEndian
	entry := func(addr uint64) uint64 { return le.Uint64(pt[addr-PML4Start:]) }
	tests := []struct {
		name       string
		addr, want uint64
	}{
		{"PML4[0]", PML4Start, PDPTStart | 3},
		{"PML4[1] empty", PML4Start + 8, 0},
		{"PDPT[0]", PDPTStart, PDStart | 3},
		{"PDPT[3]", PDPTStart + 3*8, (PDStart + 3*4096) | 3},
		{"PDPT[4] empty", PDPTStart + 4*8, 0},
		{"PD0[0] maps 0", PDStart, 0x83},
		{"PD0[8] maps 16 MiB", PDStart + 8*8, 16<<20 | 0x83},
		{"PD3[511] maps 4 GiB - 2 MiB", PDStart + 3*4096 + 511*8, (4<<30 - 2<<20) | 0x83},
	}
	for _, tt := range tests {
		if got := entry(tt.addr); got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, got, tt.want)
		}
	}
	if len(pt) != (2+IdentityMapGiB)*4096 || PDStart+IdentityMapGiB*4096 > CmdlineStart {
		t.Fatalf("page tables of %d bytes overlap the command line", len(pt))
	}
}

func TestSetupLongMode(t *testing.T) {
	mem := newMem(t, 64<<20)
	base := kvm.Sregs{APICBase: 0xfee00900, CR0: 0x60000010}
	s, err := SetupLongMode(mem, base)
	if err != nil {
		t.Fatal(err)
	}
	if s.CR0 != CR0PE|CR0ET|CR0PG || s.CR4&CR4PAE == 0 || s.EFER != EFERLME|EFERLMA || s.CR3 != PML4Start {
		t.Errorf("control registers CR0 %#x CR3 %#x CR4 %#x EFER %#x", s.CR0, s.CR3, s.CR4, s.EFER)
	}
	if s.APICBase != base.APICBase {
		t.Errorf("APIC base not kept")
	}
	cs := s.CS
	if cs.Selector != BootCSSelector || cs.L != 1 || cs.DB != 0 || cs.Type != 0xb || cs.S != 1 || cs.Present != 1 || cs.G != 1 || cs.Limit != 0xfffff {
		t.Errorf("CS = %+v", cs)
	}
	for _, seg := range []kvm.Segment{s.DS, s.ES, s.FS, s.GS, s.SS} {
		if seg.Selector != BootDSSelector || seg.Type != 3 || seg.DB != 1 || seg.Present != 1 {
			t.Errorf("data segment = %+v", seg)
		}
	}
	if s.TR.Selector != BootTSSelector || s.TR.Type != 0xb || s.TR.S != 0 || s.TR.Present != 1 {
		t.Errorf("TR = %+v", s.TR)
	}
	if s.GDT.Base != GDTStart || s.GDT.Limit != GDTEntries*8-1 || s.IDT.Base != IDTStart {
		t.Errorf("GDTR %+v IDTR %+v", s.GDT, s.IDT)
	}
	got, _ := mem.ReadUint64(GDTStart + BootCSSelector)
	if got != BootGDT()[2] {
		t.Errorf("GDT in memory: code descriptor %#x", got)
	}
	pml4, _ := mem.ReadUint64(PML4Start)
	if pml4 != PDPTStart|3 {
		t.Errorf("PML4 in memory: %#x", pml4)
	}
	if _, err := SetupLongMode(newMem(t, 0x4000), base); err == nil {
		t.Errorf("SetupLongMode into 16 KiB of memory succeeded")
	}
}

func TestBootRegsFPU(t *testing.T) {
	r := BootRegs(0x1000000)
	if r.RIP != 0x1000000 || r.RSI != ZeroPageStart || r.RFLAGS != 2 || r.RSP != BootStackPointer {
		t.Errorf("regs %+v", r)
	}
	f := BootFPU()
	if f.FCW != 0x37f || f.MXCSR != 0x1f80 {
		t.Errorf("fpu fcw %#x mxcsr %#x", f.FCW, f.MXCSR)
	}
}

func TestBootMSRs(t *testing.T) {
	want := map[uint32]uint64{
		MSRIA32SysenterCS: 0, MSRIA32SysenterESP: 0, MSRIA32SysenterEIP: 0,
		MSRSTAR: 0, MSRLSTAR: 0, MSRCSTAR: 0, MSRSyscallMask: 0, MSRKernelGSBase: 0,
		MSRIA32TSC: 0, MSRIA32MiscEnable: 1, MSRMTRRDefType: 0x806,
	}
	got := BootMSRs()
	if len(got) != len(want) {
		t.Fatalf("%d MSRs, want %d", len(got), len(want))
	}
	for _, m := range got {
		if v, ok := want[m.Index]; !ok || v != m.Data {
			t.Errorf("MSR %#x = %#x (want %#x, listed %v)", m.Index, m.Data, v, ok)
		}
	}
}

func TestSetupLINTs(t *testing.T) {
	var l kvm.LAPICState
	// Reset state: LVT entries masked (bit 16), fixed delivery.
	binary.LittleEndian.PutUint32(l.Regs[APICRegLVTLINT0:], 0x10000)
	binary.LittleEndian.PutUint32(l.Regs[APICRegLVTLINT1:], 0x10400|0x300) // garbage mode bits
	SetupLINTs(&l)
	if m := LAPICDeliveryMode(&l, APICRegLVTLINT0); m != APICModeExtINT {
		t.Errorf("LINT0 mode %d", m)
	}
	if m := LAPICDeliveryMode(&l, APICRegLVTLINT1); m != APICModeNMI {
		t.Errorf("LINT1 mode %d", m)
	}
	if v := binary.LittleEndian.Uint32(l.Regs[APICRegLVTLINT0:]); v != 0x10700 {
		t.Errorf("LINT0 = %#x, want mask kept", v)
	}
}
