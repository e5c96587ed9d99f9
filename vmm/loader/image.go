package loader

import (
	"bytes"
	"fmt"
	"io"

	"github.com/embervm/ember/vmm/memory"
)

// HighMemStart is the lowest guest physical address a kernel may be loaded
// at: everything below 1 MiB belongs to the boot configurator (zero page,
// command line, page tables, MP table) and the legacy BIOS area.
const HighMemStart = 0x100000

// Kind says which format a kernel image was loaded from.
type Kind int

// Image kinds.
const (
	KindELF Kind = iota + 1
	KindBzImage
)

func (k Kind) String() string {
	switch k {
	case KindELF:
		return "vmlinux"
	case KindBzImage:
		return "bzImage"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Result describes a loaded kernel.
type Result struct {
	// Kind is the image format.
	Kind Kind
	// Entry is the guest physical address of the 64-bit entry point.
	Entry uint64
	// Start is the lowest guest physical address the kernel occupies.
	Start uint64
	// End is the first guest physical address past everything the kernel
	// occupies, including memory it claims at run time (bss, or a
	// bzImage's init_size): the initrd and other payloads go above it.
	End uint64
	// SetupHeader holds the bzImage setup header as it appears in the
	// image, starting at offset 0x1f1 (the offset of boot_params.hdr); the
	// boot configurator copies it into the zero page. Nil for a vmlinux.
	SetupHeader []byte
}

// Load detects the format of the kernel image in r (size bytes) and loads it
// into mem.
func Load(mem memory.Accessor, r io.ReaderAt, size int64) (Result, error) {
	var magic [4]byte
	if size >= 4 {
		if err := readFull(r, magic[:], 0); err != nil {
			return Result{}, err
		}
		if bytes.Equal(magic[:], elfMagic[:]) {
			return LoadELF(mem, r, size)
		}
	}
	if size >= hdrMagicOff+4 {
		var m [4]byte
		if err := readFull(r, m[:], hdrMagicOff); err != nil {
			return Result{}, err
		}
		if string(m[:]) == hdrMagic {
			return LoadBzImage(mem, r, size)
		}
	}
	return Result{}, ErrFormat
}

// readFull reads exactly len(p) bytes at off.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %d bytes at offset %d: %w", ErrRead, len(p), off, err)
}

// container is implemented by *memory.Guest.
type container interface {
	Contains(gpa, n uint64) bool
}

// fits reports whether [gpa, gpa+n) is guest memory.
func fits(mem memory.Accessor, gpa, n uint64) bool {
	if gpa+n < gpa {
		return false
	}
	if c, ok := mem.(container); ok {
		return c.Contains(gpa, n)
	}
	_, err := mem.Slice(gpa, n)
	return err == nil
}

// copyChunk is the buffer size for copies that cannot go straight into a
// guest memory slice.
const copyChunk = 1 << 20

// copyIn copies n bytes of r at off to guest address gpa. The caller has
// checked that [off, off+n) lies in the image.
func copyIn(mem memory.Accessor, gpa uint64, r io.ReaderAt, off int64, n uint64) error {
	if !fits(mem, gpa, n) {
		return fmt.Errorf("%w: [%#x,+%#x)", ErrNoFit, gpa, n)
	}
	if s, err := mem.Slice(gpa, n); err == nil {
		return readFull(r, s, off)
	}
	buf := make([]byte, min(n, copyChunk))
	for n > 0 {
		k := min(n, uint64(len(buf)))
		if err := readFull(r, buf[:k], off); err != nil {
			return err
		}
		if err := mem.WriteAt(buf[:k], gpa); err != nil {
			return fmt.Errorf("%w: %w", ErrNoFit, err)
		}
		gpa, off, n = gpa+k, off+int64(k), n-k
	}
	return nil
}

// zeroFill clears [gpa, gpa+n) of guest memory.
func zeroFill(mem memory.Accessor, gpa, n uint64) error {
	if n == 0 {
		return nil
	}
	if !fits(mem, gpa, n) {
		return fmt.Errorf("%w: [%#x,+%#x)", ErrNoFit, gpa, n)
	}
	if s, err := mem.Slice(gpa, n); err == nil {
		clear(s)
		return nil
	}
	buf := make([]byte, min(n, copyChunk))
	for n > 0 {
		k := min(n, uint64(len(buf)))
		if err := mem.WriteAt(buf[:k], gpa); err != nil {
			return fmt.Errorf("%w: %w", ErrNoFit, err)
		}
		gpa, n = gpa+k, n-k
	}
	return nil
}
