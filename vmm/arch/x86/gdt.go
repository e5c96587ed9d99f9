package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// Boot GDT selectors. The 64-bit boot protocol wants __BOOT_CS (0x10) and
// __BOOT_DS (0x18) to be flat code and data segments.
const (
	BootCSSelector = 0x10
	BootDSSelector = 0x18
	BootTSSelector = 0x20
	// GDTEntries is the number of 8-byte descriptors in the boot GDT.
	GDTEntries = 5
)

// Descriptor flag words (access byte in bits 0-7, flags nibble in 12-15).
const (
	gdtCode64 = 0xa09b // present, DPL0, code exec/read accessed; G, L
	gdtData   = 0xc093 // present, DPL0, data read/write accessed; G, D/B
	gdtTSS    = 0x808b // present, DPL0, busy 64-bit TSS; G
)

// gdtEntry encodes a segment descriptor.
func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<(56-24) |
		uint64(flags&0xf0ff)<<40 |
		uint64(limit&0xf0000)<<(48-16) |
		uint64(base&0x00ffffff)<<16 |
		uint64(limit&0xffff)
}

// segmentFromEntry decodes a descriptor into KVM's segment form.
func segmentFromEntry(e uint64, sel uint16) kvm.Segment {
	b := func(shift, bits uint) uint8 { return uint8(e >> shift & (1<<bits - 1)) }
	return kvm.Segment{
		Base:     e>>16&0xffffff | e>>56<<24,
		Limit:    uint32(e&0xffff | (e>>48&0xf)<<16),
		Selector: sel,
		Type:     b(40, 4),
		S:        b(44, 1),
		DPL:      b(45, 2),
		Present:  b(47, 1),
		AVL:      b(52, 1),
		L:        b(53, 1),
		DB:       b(54, 1),
		G:        b(55, 1),
	}
}

// BootGDT returns the boot GDT: two null descriptors, then 64-bit code at
// BootCSSelector, flat data at BootDSSelector and a TSS at BootTSSelector.
func BootGDT() [GDTEntries]uint64 {
	return [GDTEntries]uint64{
		0,
		0,
		gdtEntry(gdtCode64, 0, 0xfffff),
		gdtEntry(gdtData, 0, 0xfffff),
		gdtEntry(gdtTSS, 0, 0xfffff),
	}
}

// writeGDT writes the boot GDT and an empty IDT.
func writeGDT(mem memory.Accessor) error {
	gdt := BootGDT()
	var b [GDTEntries * 8]byte
	for i, e := range gdt {
		binary.LittleEndian.PutUint64(b[i*8:], e)
	}
	if err := mem.WriteAt(b[:], GDTStart); err != nil {
		return fmt.Errorf("%w: GDT: %w", ErrMemory, err)
	}
	if err := mem.WriteAt(make([]byte, 8), IDTStart); err != nil {
		return fmt.Errorf("%w: IDT: %w", ErrMemory, err)
	}
	return nil
}
