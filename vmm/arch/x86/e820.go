package x86

import "fmt"

// E820MaxEntries is the capacity of boot_params.e820_table.
const E820MaxEntries = 128

// E820Type is an e820 memory type.
type E820Type uint32

// e820 types.
const (
	E820RAM      E820Type = 1
	E820Reserved E820Type = 2
	E820ACPI     E820Type = 3
	E820NVS      E820Type = 4
	E820Unusable E820Type = 5
)

// E820Entry is one range of the guest's physical memory map.
type E820Entry struct {
	Addr uint64
	Size uint64
	Type E820Type
}

// E820Table is the memory map handed to the kernel in the zero page. It
// holds at most E820MaxEntries entries.
type E820Table struct {
	entries []E820Entry
}

// Add appends an entry; it fails with ErrE820Full when the table is full
// and ErrE820Range for an empty or wrapping range.
func (t *E820Table) Add(addr, size uint64, typ E820Type) error {
	if size == 0 || addr+size < addr {
		return fmt.Errorf("%w: [%#x,+%#x)", ErrE820Range, addr, size)
	}
	if len(t.entries) >= E820MaxEntries {
		return fmt.Errorf("%w: cannot add [%#x,+%#x)", ErrE820Full, addr, size)
	}
	t.entries = append(t.entries, E820Entry{Addr: addr, Size: size, Type: typ})
	return nil
}

// Entries returns a copy of the entries in insertion order.
func (t *E820Table) Entries() []E820Entry {
	return append([]E820Entry(nil), t.entries...)
}

// Len returns the number of entries.
func (t *E820Table) Len() int { return len(t.entries) }

// DefaultE820 builds the memory map for RAM laid out by MemoryRanges: base
// memory below the EBDA and everything from 1 MiB, minus the MMIO hole.
func DefaultE820(ramSize uint64) (*E820Table, error) {
	ranges, err := MemoryRanges(ramSize)
	if err != nil {
		return nil, err
	}
	t := &E820Table{}
	if err := t.Add(0, EBDAStart, E820RAM); err != nil {
		return nil, err
	}
	for _, r := range ranges {
		start, end := max(r.GPA, HighMemStart), r.GPA+r.Size
		if err := t.Add(start, end-start, E820RAM); err != nil {
			return nil, err
		}
	}
	return t, nil
}
