package testguest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadImage reports a test-guest image that cannot be loaded.
var ErrBadImage = errors.New("testguest: bad image")

// imageMagic starts every test-guest image file.
var imageMagic = [8]byte{'E', 'M', 'T', 'G', 'U', 'E', 'S', 'T'}

const (
	imageVersion    = 1
	imageHeaderSize = 48
	flagCPL0        = 1 << 0
)

// Image is a loadable test guest.
type Image struct {
	// Code is the program, loaded at Load.
	Code []byte
	// Load is the guest physical load address (CodeBase by default).
	Load uint64
	// Entry is the guest physical address of the first instruction.
	Entry uint64
	// Memory is the guest memory size in bytes.
	Memory uint64
	// CPL0 runs the program in kernel mode (emulated, and slow, on hosts
	// whose KVM runs only user mode natively).
	CPL0 bool
}

// NewImage wraps code assembled for CodeBase in an image with mem bytes of
// guest memory.
func NewImage(code []byte, mem uint64) *Image {
	return &Image{Code: code, Load: CodeBase, Entry: CodeBase, Memory: mem}
}

// Validate checks that the image fits its own memory map.
func (img *Image) Validate() error {
	switch {
	case len(img.Code) == 0:
		return fmt.Errorf("%w: no code", ErrBadImage)
	case img.Memory < MinMemory || img.Memory > MaxMemory || img.Memory%(1<<20) != 0:
		return fmt.Errorf("%w: memory %d bytes (want a whole number of MiB in [%d MiB, %d GiB])",
			ErrBadImage, img.Memory, MinMemory>>20, MaxMemory>>30)
	case img.Load < CodeBase || img.Load >= img.Memory || uint64(len(img.Code)) > img.Memory-img.Load:
		return fmt.Errorf("%w: code [%#x,+%#x) outside guest memory [%#x,%#x)",
			ErrBadImage, img.Load, len(img.Code), CodeBase, img.Memory)
	case img.Load+uint64(len(img.Code)) > mappedTop:
		return fmt.Errorf("%w: code beyond the mapped 4 GiB", ErrBadImage)
	case img.Entry < img.Load || img.Entry >= img.Load+uint64(len(img.Code)):
		return fmt.Errorf("%w: entry %#x outside the code [%#x,+%#x)", ErrBadImage, img.Entry, img.Load, len(img.Code))
	}
	return nil
}

// MarshalBinary encodes the image as a file:
//
//	0  magic "EMTGUEST"
//	8  u32 version (1)
//	12 u32 flags (bit 0: CPL0)
//	16 u64 load address
//	24 u64 entry
//	32 u64 memory size
//	40 u64 code length
//	48 code
//
// all little-endian.
func (img *Image) MarshalBinary() ([]byte, error) {
	if err := img.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, imageHeaderSize, imageHeaderSize+len(img.Code))
	copy(b, imageMagic[:])
	le := binary.LittleEndian
	le.PutUint32(b[8:], imageVersion)
	var flags uint32
	if img.CPL0 {
		flags |= flagCPL0
	}
	le.PutUint32(b[12:], flags)
	le.PutUint64(b[16:], img.Load)
	le.PutUint64(b[24:], img.Entry)
	le.PutUint64(b[32:], img.Memory)
	le.PutUint64(b[40:], uint64(len(img.Code)))
	return append(b, img.Code...), nil
}

// ParseImage decodes and validates an image file.
func ParseImage(b []byte) (*Image, error) {
	if len(b) < imageHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the %d-byte header", ErrBadImage, len(b), imageHeaderSize)
	}
	if !bytes.Equal(b[:8], imageMagic[:]) {
		return nil, fmt.Errorf("%w: magic %q, want %q", ErrBadImage, b[:8], imageMagic[:])
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:]); v != imageVersion {
		return nil, fmt.Errorf("%w: version %d, this ember reads version %d", ErrBadImage, v, imageVersion)
	}
	flags := le.Uint32(b[12:])
	if flags&^flagCPL0 != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrBadImage, flags)
	}
	n := le.Uint64(b[40:])
	if n != uint64(len(b)-imageHeaderSize) {
		return nil, fmt.Errorf("%w: header says %d code bytes, file has %d", ErrBadImage, n, len(b)-imageHeaderSize)
	}
	img := &Image{
		Code:   append([]byte(nil), b[imageHeaderSize:]...),
		Load:   le.Uint64(b[16:]),
		Entry:  le.Uint64(b[24:]),
		Memory: le.Uint64(b[32:]),
		CPL0:   flags&flagCPL0 != 0,
	}
	if err := img.Validate(); err != nil {
		return nil, err
	}
	return img, nil
}
