package testguest

// Guest physical memory map of a test guest.
const (
	GDTAddr   = 0x500    // GDT: null, kernel code/data, user code/data, TSS
	TSSAddr   = 0x10000  // 64-bit TSS with a full I/O permission bitmap
	PML4Addr  = 0x1000   // page tables: PML4, PDPT, four PDs (4 GiB, 2 MiB pages)
	PDPTAddr  = 0x2000   //
	PDAddr    = 0x3000   //
	StackTop  = 0x80000  // initial RSP
	CodeBase  = 0x100000 // default load address of the program
	DataBase  = 0x200000 // first byte free for program data
	MinMemory = 4 << 20  // smallest guest memory a test guest may have
	MaxMemory = 64 << 30 // largest guest memory a test guest may ask for
	mappedTop = 4 << 30  // the page tables map [0, 4 GiB)
	tssSize   = 104 + 65536/8 + 1
)

// Selectors in the test guest's GDT.
const (
	selKernelCode = 0x08
	selKernelData = 0x10
	selUserCode   = 0x18 | 3
	selUserData   = 0x20 | 3
	selTSS        = 0x28
)

// Test device addresses.
const (
	// PortReportLo latches the low 32 bits of a value to report.
	PortReportLo = 0x500
	// PortReportHi takes the high 32 bits and records the value.
	PortReportHi = 0x504
	// PortExit ends the machine; the 32-bit value written is the exit code.
	PortExit = 0x508
	// PortPutc prints the byte written.
	PortPutc = 0x50c
	// PortPing does nothing but count: it measures a PIO round trip.
	PortPing = 0x510
	// portsSize is the span of the test ports.
	portsSize = 0x20

	// MMIOBase is the test MMIO device: register 0 reads MMIOMagic, and
	// registers 1..15 (8 bytes each) hold what the guest writes.
	MMIOBase = 0xd0000000
	// MMIOSize is the size of the test MMIO device's window.
	MMIOSize = 0x1000
	// MMIOMagic is what register 0 of the MMIO device reads ("EMBR").
	MMIOMagic = 0x454d4252
)

// IdentityAddr is the page where the VMM writes a test guest's identity
// nonce (8 bytes, little-endian) when the guest is re-identified after a
// restore or a pool claim.
const IdentityAddr = 0x90000
