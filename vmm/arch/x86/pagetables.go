package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/embervm/ember/vmm/memory"
)

// Page table entry bits.
const (
	ptePresent  = 1 << 0
	pteWritable = 1 << 1
	ptePageSize = 1 << 7 // 2 MiB page in a page directory
)

// pageTableBytes is the size of the boot page tables: PML4, PDPT and
// IdentityMapGiB page directories, contiguous from PML4Start.
const pageTableBytes = (2 + IdentityMapGiB) * memory.PageSize

// BuildPageTables returns the boot page tables, to be placed at PML4Start:
// an identity map of the first IdentityMapGiB GiB with 2 MiB pages. The
// kernel replaces them early; they only need to cover the kernel, the zero
// page, the command line and the initrd.
func BuildPageTables() []byte {
	pt := make([]byte, pageTableBytes)
	le := binary.LittleEndian
	le.PutUint64(pt[0:], PDPTStart|ptePresent|pteWritable)
	pdpt := pt[PDPTStart-PML4Start:]
	for g := uint64(0); g < IdentityMapGiB; g++ {
		le.PutUint64(pdpt[g*8:], (PDStart+g*memory.PageSize)|ptePresent|pteWritable)
		pd := pt[PDStart-PML4Start+g*memory.PageSize:]
		for i := uint64(0); i < 512; i++ {
			le.PutUint64(pd[i*8:], (g<<30|i<<21)|ptePresent|pteWritable|ptePageSize)
		}
	}
	return pt
}

// writePageTables writes the boot page tables at PML4Start.
func writePageTables(mem memory.Accessor) error {
	if err := mem.WriteAt(BuildPageTables(), PML4Start); err != nil {
		return fmt.Errorf("%w: page tables: %w", ErrMemory, err)
	}
	return nil
}
