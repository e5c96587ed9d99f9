package x86

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/embervm/ember/vmm/memory"
)

// ZeroPageSize is the size of struct boot_params.
const ZeroPageSize = 4096

// Offsets in struct boot_params (Documentation/arch/x86/zero-page.rst and
// boot.rst). The setup header (hdr) starts at SetupHeaderOffset; its field
// offsets below are absolute, as the boot protocol documents them.
const (
	SetupHeaderOffset = 0x1f1
	// SetupHeaderLimit is the first byte after the room reserved for hdr.
	SetupHeaderLimit = 0x290

	bpExtRamdiskImage = 0x0c0
	bpExtRamdiskSize  = 0x0c4
	bpExtCmdLinePtr   = 0x0c8
	bpE820Entries     = 0x1e8
	bpE820Table       = 0x2d0
	e820EntrySize     = 20

	hdrBootFlag      = 0x1fe
	hdrMagic         = 0x202
	hdrVersion       = 0x206
	hdrTypeOfLoader  = 0x210
	hdrLoadflags     = 0x211
	hdrRamdiskImage  = 0x218
	hdrRamdiskSize   = 0x21c
	hdrHeapEndPtr    = 0x224
	hdrCmdLinePtr    = 0x228
	hdrInitrdAddrMax = 0x22c
	hdrKernelAlign   = 0x230
	hdrCmdlineSize   = 0x238

	bootFlag      = 0xaa55
	magicHdrS     = 0x53726448 // "HdrS"
	loaderUnknown = 0xff       // type_of_loader: boot loader without an assigned id
	loadedHigh    = 0x01
	canUseHeap    = 0x80
	heapEnd       = 0xfe00
)

// DefaultCmdlineSize is the x86 kernel's COMMAND_LINE_SIZE, the limit
// (terminating NUL included) when the kernel does not state its own
// cmdline_size (a vmlinux, or boot protocol older than 2.06).
const DefaultCmdlineSize = 2048

// DefaultInitrdAddrMax is the highest initrd address a 64-bit kernel
// accepts when it does not say (a vmlinux has no setup header).
const DefaultInitrdAddrMax = 0x7fffffff

// BootConfig is what goes into the zero page.
type BootConfig struct {
	// Cmdline is the kernel command line, without terminating NUL.
	Cmdline string
	// E820 is the memory map; required.
	E820 *E820Table
	// InitrdAddr and InitrdSize locate the initrd; zero size means none.
	InitrdAddr uint64
	InitrdSize uint64
	// SetupHeader is the bzImage setup header from the loader (bytes from
	// offset 0x1f1 of the image); nil for a vmlinux.
	SetupHeader []byte
}

// setupHeaderField returns the little-endian field of n bytes at absolute
// offset off of the setup header, and whether the header holds it.
func setupHeaderField(hdr []byte, off, n int) (uint64, bool) {
	i := off - SetupHeaderOffset
	if i < 0 || i+n > len(hdr) {
		return 0, false
	}
	var v uint64
	for k := n - 1; k >= 0; k-- {
		v = v<<8 | uint64(hdr[i+k])
	}
	return v, true
}

// protocolVersion returns the setup header's boot protocol version, or 0.
func protocolVersion(hdr []byte) uint64 {
	v, _ := setupHeaderField(hdr, hdrVersion, 2)
	return v
}

// CmdlineLimit returns the longest command line (without the terminating
// NUL) that the kernel described by hdr (nil for a vmlinux) and ember's
// command line area accept.
func CmdlineLimit(hdr []byte) int {
	limit := uint64(DefaultCmdlineSize - 1)
	if protocolVersion(hdr) >= 0x0206 {
		if v, ok := setupHeaderField(hdr, hdrCmdlineSize, 4); ok {
			limit = v
		}
	}
	return int(min(limit, CmdlineMaxSize-1))
}

// InitrdAddrMax returns the highest address the initrd's last byte may have
// for the kernel described by hdr (nil for a vmlinux).
func InitrdAddrMax(hdr []byte) uint64 {
	if protocolVersion(hdr) >= 0x0203 {
		if v, ok := setupHeaderField(hdr, hdrInitrdAddrMax, 4); ok && v != 0 {
			return v
		}
	}
	return DefaultInitrdAddrMax
}

// PlaceInitrd picks the initrd's address: page aligned, as high as possible
// below lowMemEnd (the end of RAM below the MMIO hole) and the kernel's
// initrd_addr_max (from hdr; nil for a vmlinux), and above kernelEnd.
func PlaceInitrd(lowMemEnd, kernelEnd, size uint64, hdr []byte) (uint64, error) {
	if size == 0 {
		return 0, fmt.Errorf("%w: empty initrd", ErrInitrdNoFit)
	}
	top := min(lowMemEnd, MMIOStart)
	if m := InitrdAddrMax(hdr); m < ^uint64(0) {
		top = min(top, m+1)
	}
	if size > top {
		return 0, fmt.Errorf("%w: %d bytes below %#x", ErrInitrdNoFit, size, top)
	}
	addr := (top - size) &^ (memory.PageSize - 1)
	if addr < kernelEnd {
		return 0, fmt.Errorf("%w: %d bytes between the kernel end %#x and %#x", ErrInitrdNoFit, size, kernelEnd, top)
	}
	return addr, nil
}

// checkCmdline validates the command line against the kernel's limit.
func checkCmdline(cmdline string, hdr []byte) error {
	if strings.IndexByte(cmdline, 0) >= 0 {
		return ErrCmdlineInvalid
	}
	if limit := CmdlineLimit(hdr); len(cmdline) > limit {
		return fmt.Errorf("%w: %d bytes, the kernel accepts %d", ErrCmdlineTooLong, len(cmdline), limit)
	}
	return nil
}

// BuildZeroPage returns the zero page for cfg, with the command line
// expected at CmdlineStart.
func BuildZeroPage(cfg BootConfig) ([]byte, error) {
	if cfg.E820 == nil || cfg.E820.Len() == 0 {
		return nil, fmt.Errorf("%w: empty", ErrE820Range)
	}
	if err := checkCmdline(cfg.Cmdline, cfg.SetupHeader); err != nil {
		return nil, err
	}
	zp := make([]byte, ZeroPageSize)
	le := binary.LittleEndian
	if hdr := cfg.SetupHeader; hdr != nil {
		if len(hdr) > SetupHeaderLimit-SetupHeaderOffset {
			return nil, fmt.Errorf("%w: %d bytes", ErrSetupHeader, len(hdr))
		}
		if m, ok := setupHeaderField(hdr, hdrMagic, 4); !ok || m != magicHdrS {
			return nil, fmt.Errorf("%w: no HdrS signature", ErrSetupHeader)
		}
		copy(zp[SetupHeaderOffset:], hdr)
	} else {
		le.PutUint16(zp[hdrBootFlag:], bootFlag)
		le.PutUint32(zp[hdrMagic:], magicHdrS)
		le.PutUint32(zp[hdrKernelAlign:], KernelStart)
		// cmdline_size is the kernel's to state (read-only for a boot
		// loader); without a setup header, state the length written.
		le.PutUint32(zp[hdrCmdlineSize:], uint32(len(cfg.Cmdline)+1))
	}
	zp[hdrTypeOfLoader] = loaderUnknown
	zp[hdrLoadflags] |= loadedHigh | canUseHeap
	le.PutUint16(zp[hdrHeapEndPtr:], heapEnd)
	le.PutUint32(zp[hdrCmdLinePtr:], uint32(CmdlineStart))
	le.PutUint32(zp[bpExtCmdLinePtr:], uint32(uint64(CmdlineStart)>>32))
	if cfg.InitrdSize > 0 {
		if cfg.InitrdAddr+cfg.InitrdSize < cfg.InitrdAddr || cfg.InitrdSize > 0xffffffff {
			return nil, fmt.Errorf("%w: [%#x,+%#x)", ErrInitrdNoFit, cfg.InitrdAddr, cfg.InitrdSize)
		}
		le.PutUint32(zp[hdrRamdiskImage:], uint32(cfg.InitrdAddr))
		le.PutUint32(zp[bpExtRamdiskImage:], uint32(cfg.InitrdAddr>>32))
		le.PutUint32(zp[hdrRamdiskSize:], uint32(cfg.InitrdSize))
		le.PutUint32(zp[bpExtRamdiskSize:], uint32(cfg.InitrdSize>>32))
	}
	entries := cfg.E820.Entries()
	if len(entries) > E820MaxEntries {
		return nil, ErrE820Full
	}
	zp[bpE820Entries] = uint8(len(entries))
	for i, e := range entries {
		b := zp[bpE820Table+i*e820EntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], uint32(e.Type))
	}
	return zp, nil
}

// WriteBootParams writes the command line (NUL terminated) at CmdlineStart
// and the zero page at ZeroPageStart.
func WriteBootParams(mem memory.Accessor, cfg BootConfig) error {
	zp, err := BuildZeroPage(cfg)
	if err != nil {
		return err
	}
	cmdline := append([]byte(cfg.Cmdline), 0)
	if err := mem.WriteAt(cmdline, CmdlineStart); err != nil {
		return fmt.Errorf("%w: command line: %w", ErrMemory, err)
	}
	if err := mem.WriteAt(zp, ZeroPageStart); err != nil {
		return fmt.Errorf("%w: zero page: %w", ErrMemory, err)
	}
	return nil
}
