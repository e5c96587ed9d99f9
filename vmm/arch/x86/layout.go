package x86

import (
	"fmt"

	"github.com/embervm/ember/vmm/memory"
)

// Guest physical memory layout. Low memory (below 1 MiB) holds the boot
// structures; the kernel goes at 16 MiB (vmlinux, its LOAD_PHYSICAL_ADDR) or
// 1 MiB (bzImage); RAM above 3 GiB is moved above 4 GiB so that
// [3 GiB, 4 GiB) is free for MMIO (virtio-mmio devices, IOAPIC, LAPIC).
//
//	0x0000_0500  GDT (GDTEntries x 8 bytes)
//	0x0000_0520  IDT (empty, one entry)
//	0x0000_7000  zero page (struct boot_params)
//	0x0000_8ff0  boot stack pointer
//	0x0000_9000  PML4
//	0x0000_a000  PDPT
//	0x0000_b000  4 page directories (identity map of 4 GiB, 2 MiB pages)
//	0x0002_0000  kernel command line (CmdlineMaxSize)
//	0x0009_fc00  EBDA: MP floating pointer and MP configuration table
//	0x000a_0000  legacy VGA / BIOS hole (not RAM in the e820 table)
//	0x0010_0000  HighMemStart: bzImage protected-mode kernel
//	0x0100_0000  KernelStart: vmlinux
//	...          initrd, at the top of low RAM
//	0xc000_0000  MMIOStart: virtio-mmio devices from VirtioMMIOBase
//	0xfec0_0000  IOAPIC
//	0xfee0_0000  local APIC
//	0x1_0000_0000 RAM above 3 GiB continues here
const (
	GDTStart         = 0x500
	IDTStart         = 0x520
	ZeroPageStart    = 0x7000
	BootStackPointer = 0x8ff0
	PML4Start        = 0x9000
	PDPTStart        = 0xa000
	PDStart          = 0xb000
	// IdentityMapGiB is how much the boot page tables map, from 0.
	IdentityMapGiB = 4
	CmdlineStart   = 0x20000
	// CmdlineMaxSize is the room for the command line, terminating NUL
	// included; the kernel's own limit (cmdline_size) is usually smaller.
	CmdlineMaxSize = 0x10000
	EBDAStart      = 0x9fc00
	MPTableStart   = EBDAStart
	HighMemStart   = 0x100000
	KernelStart    = 0x1000000

	MMIOStart  = 0xc0000000
	MMIOSize   = 0x40000000
	MMIOEnd    = MMIOStart + MMIOSize // 4 GiB
	IOAPICAddr = 0xfec00000
	LAPICAddr  = 0xfee00000
	// VirtioMMIOBase is the first virtio-mmio device's address; each
	// device gets VirtioMMIOStride bytes.
	VirtioMMIOBase   = 0xd0000000
	VirtioMMIOStride = 0x1000
	VirtioMMIOLimit  = IOAPICAddr
)

// Legacy devices and interrupt lines.
const (
	// COM1 is the serial console's port base; it takes 8 ports.
	COM1     = 0x3f8
	COM1IRQ  = 4
	I8042Cmd = 0x64
	// FirstDeviceIRQ..LastDeviceIRQ are the IOAPIC pins given to
	// virtio-mmio devices, in order.
	FirstDeviceIRQ = 5
	LastDeviceIRQ  = 23
	// IOAPICPins is the number of IOAPIC inputs (KVM's in-kernel IOAPIC).
	IOAPICPins = 24
)

// MinMemory is the smallest guest RAM size the layout accepts: room for the
// boot structures, a kernel at 16 MiB and its early allocations.
const MinMemory = 32 << 20

// MemoryRanges splits size bytes of guest RAM around the MMIO hole: up to
// 3 GiB from address 0, the rest from 4 GiB. size must be a multiple of the
// page size and at least MinMemory.
func MemoryRanges(size uint64) ([]memory.Range, error) {
	if size < MinMemory || size%memory.PageSize != 0 || size > 1<<46 {
		return nil, fmt.Errorf("%w: %d bytes of RAM", ErrLayout, size)
	}
	if size <= MMIOStart {
		return []memory.Range{{GPA: 0, Size: size}}, nil
	}
	return []memory.Range{
		{GPA: 0, Size: MMIOStart},
		{GPA: MMIOEnd, Size: size - MMIOStart},
	}, nil
}

// VirtioMMIOSlot returns the MMIO base address and IOAPIC pin of the n-th
// (from 0) virtio-mmio device.
func VirtioMMIOSlot(n int) (addr uint64, irq uint32, err error) {
	if n < 0 || n > LastDeviceIRQ-FirstDeviceIRQ {
		return 0, 0, fmt.Errorf("%w: virtio-mmio slot %d (at most %d devices)", ErrLayout, n, LastDeviceIRQ-FirstDeviceIRQ+1)
	}
	return VirtioMMIOBase + uint64(n)*VirtioMMIOStride, uint32(FirstDeviceIRQ + n), nil
}

// VirtioMMIOCmdline returns the kernel command line parameter that declares
// a virtio-mmio device (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).
func VirtioMMIOCmdline(addr uint64, irq uint32) string {
	return fmt.Sprintf("virtio_mmio.device=4K@%#x:%d", addr, irq)
}
