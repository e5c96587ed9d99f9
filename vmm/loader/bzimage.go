package loader

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"

	"github.com/embervm/ember/vmm/memory"
)

// Offsets of setup header fields in a bzImage; they are the same in the
// zero page (struct boot_params), whose hdr member starts at 0x1f1. See
// Documentation/arch/x86/boot.rst.
const (
	SetupHeaderOffset = 0x1f1 // boot_params.hdr
	SetupHeaderLimit  = 0x290 // first byte after the room for hdr in boot_params

	hdrSetupSectsOff  = 0x1f1
	hdrSyssizeOff     = 0x1f4
	hdrBootFlagOff    = 0x1fe
	hdrJumpOff        = 0x200
	hdrMagicOff       = 0x202
	hdrVersionOff     = 0x206
	hdrLoadflagsOff   = 0x211
	hdrKernelAlignOff = 0x230
	hdrRelocatableOff = 0x234
	hdrXLoadflagsOff  = 0x236
	hdrPrefAddressOff = 0x258
	hdrInitSizeOff    = 0x260

	hdrMagic      = "HdrS"
	hdrBootFlag   = 0xaa55
	sectorSize    = 512
	defaultSects  = 4
	bzImageEntry  = 0x200 // 64-bit entry: load address + 0x200
	minProtocol   = 0x020c
	loadedHigh    = 1 << 0 // loadflags: protected-mode code at 0x100000
	xlfKernel64   = 1 << 0 // xloadflags: has the 64-bit entry point
	minHeaderEnd  = hdrInitSizeOff + 4
	bzImageLoadAt = HighMemStart
)

// LoadBzImage loads a bzImage (boot protocol 2.12 or later with a 64-bit
// entry point) from r (size bytes): its protected-mode kernel goes to 1 MiB
// and the entry point is 1 MiB + 0x200. The returned End covers the memory
// the kernel claims while decompressing: init_size bytes at pref_address
// (or at the kernel_alignment-aligned load address when that is higher and
// the kernel is relocatable), which must be guest memory.
func LoadBzImage(mem memory.Accessor, r io.ReaderAt, size int64) (Result, error) {
	if size < minHeaderEnd {
		return Result{}, fmt.Errorf("%w: file of %d bytes is shorter than a setup header", ErrInvalidBzImage, size)
	}
	head := make([]byte, SetupHeaderLimit)
	n := min(int64(len(head)), size)
	if err := readFull(r, head[:n], 0); err != nil {
		return Result{}, err
	}
	le := binary.LittleEndian
	if le.Uint16(head[hdrBootFlagOff:]) != hdrBootFlag {
		return Result{}, fmt.Errorf("%w: boot flag %#x", ErrInvalidBzImage, le.Uint16(head[hdrBootFlagOff:]))
	}
	if string(head[hdrMagicOff:hdrMagicOff+4]) != hdrMagic {
		return Result{}, fmt.Errorf("%w: no HdrS signature", ErrInvalidBzImage)
	}
	if v := le.Uint16(head[hdrVersionOff:]); v < minProtocol {
		return Result{}, fmt.Errorf("%w: boot protocol %d.%02d, need 2.12 or later", ErrUnsupported, v>>8, v&0xff)
	}
	hdrEnd := int64(hdrJumpOff+2) + int64(head[hdrJumpOff+1])
	if hdrEnd < minHeaderEnd || hdrEnd > size {
		return Result{}, fmt.Errorf("%w: setup header ends at %#x", ErrInvalidBzImage, hdrEnd)
	}
	hdrEnd = min(hdrEnd, SetupHeaderLimit)
	if head[hdrLoadflagsOff]&loadedHigh == 0 {
		return Result{}, fmt.Errorf("%w: kernel is not loaded high (zImage)", ErrUnsupported)
	}
	if le.Uint16(head[hdrXLoadflagsOff:])&xlfKernel64 == 0 {
		return Result{}, fmt.Errorf("%w: no 64-bit entry point (XLF_KERNEL_64 clear)", ErrUnsupported)
	}

	sects := int64(head[hdrSetupSectsOff])
	if sects == 0 {
		sects = defaultSects
	}
	pmOff := (sects + 1) * sectorSize
	if pmOff >= size {
		return Result{}, fmt.Errorf("%w: %d setup sectors leave no kernel in a file of %d bytes", ErrInvalidBzImage, sects, size)
	}
	pmSize := uint64(size - pmOff)
	syssize := uint64(le.Uint32(head[hdrSyssizeOff:])) * 16
	if syssize == 0 || syssize > pmSize+15 {
		return Result{}, fmt.Errorf("%w: syssize %#x bytes, but %#x bytes follow the setup code", ErrInvalidBzImage, syssize, pmSize)
	}

	initSize := uint64(le.Uint32(head[hdrInitSizeOff:]))
	pref := le.Uint64(head[hdrPrefAddressOff:])
	if initSize == 0 {
		return Result{}, fmt.Errorf("%w: init_size is zero", ErrInvalidBzImage)
	}
	runStart := pref
	if head[hdrRelocatableOff] != 0 {
		align := uint64(le.Uint32(head[hdrKernelAlignOff:]))
		if align == 0 || bits.OnesCount64(align) != 1 {
			return Result{}, fmt.Errorf("%w: kernel_alignment %#x is not a power of two", ErrInvalidBzImage, align)
		}
		runStart = max(alignUp(bzImageLoadAt, align), pref)
	}
	if runStart < HighMemStart || runStart+initSize < runStart {
		return Result{}, fmt.Errorf("%w: run-time range [%#x,+%#x)", ErrInvalidBzImage, runStart, initSize)
	}
	if !fits(mem, runStart, initSize) {
		return Result{}, fmt.Errorf("%w: kernel needs [%#x,+%#x) to decompress", ErrNoFit, runStart, initSize)
	}
	if err := copyIn(mem, bzImageLoadAt, r, pmOff, pmSize); err != nil {
		return Result{}, fmt.Errorf("protected-mode kernel: %w", err)
	}
	return Result{
		Kind:        KindBzImage,
		Entry:       bzImageLoadAt + bzImageEntry,
		Start:       bzImageLoadAt,
		End:         max(bzImageLoadAt+pmSize, runStart+initSize),
		SetupHeader: append([]byte(nil), head[SetupHeaderOffset:hdrEnd]...),
	}, nil
}

// alignUp rounds v up to a multiple of the power of two a.
func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
