package loader

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/embervm/ember/vmm/memory"
)

// ELF64 constants used by the vmlinux loader.
const (
	elfHeaderSize  = 64
	elfPhdrSize    = 56
	elfClass64     = 2
	elfData2LSB    = 1
	elfVersion     = 1
	elfTypeExec    = 2
	elfMachineX64  = 62
	elfPTLoad      = 1
	elfMaxPhdrs    = 128 // vmlinux has a handful; bounds the work on hostile input
	elfPhnumXNum   = 0xffff
	elfIdentClass  = 4
	elfIdentData   = 5
	elfIdentVerOff = 6
)

var elfMagic = [4]byte{0x7f, 'E', 'L', 'F'}

// elfHeader holds the ELF64 header fields the loader uses.
type elfHeader struct {
	typ, machine      uint16
	version           uint32
	entry, phoff      uint64
	ehsize, phentsize uint16
	phnum             uint16
}

// elfPhdr is one ELF64 program header.
type elfPhdr struct {
	typ           uint32
	off, paddr    uint64
	filesz, memsz uint64
}

// LoadELF loads an ELF64 x86-64 vmlinux from r (size bytes): each PT_LOAD
// segment goes to its physical address (p_paddr), its bss (p_memsz beyond
// p_filesz) is zeroed, and the entry point is e_entry, which for an x86-64
// vmlinux is the physical address of startup_64. Segments must lie at or
// above HighMemStart.
func LoadELF(mem memory.Accessor, r io.ReaderAt, size int64) (Result, error) {
	h, err := parseELFHeader(r, size)
	if err != nil {
		return Result{}, err
	}
	phdrs, err := parsePhdrs(r, size, h)
	if err != nil {
		return Result{}, err
	}
	res := Result{Kind: KindELF, Entry: h.entry, Start: ^uint64(0)}
	entryOK := false
	for i, p := range phdrs {
		if p.typ != elfPTLoad || p.memsz == 0 {
			continue
		}
		if p.paddr < HighMemStart {
			return Result{}, fmt.Errorf("%w: segment %d at %#x is below %#x", ErrInvalidELF, i, p.paddr, HighMemStart)
		}
		if err := copyIn(mem, p.paddr, r, int64(p.off), p.filesz); err != nil {
			return Result{}, fmt.Errorf("segment %d: %w", i, err)
		}
		if err := zeroFill(mem, p.paddr+p.filesz, p.memsz-p.filesz); err != nil {
			return Result{}, fmt.Errorf("segment %d bss: %w", i, err)
		}
		res.Start = min(res.Start, p.paddr)
		res.End = max(res.End, p.paddr+p.memsz)
		if h.entry >= p.paddr && h.entry-p.paddr < p.filesz {
			entryOK = true
		}
	}
	if res.End == 0 {
		return Result{}, fmt.Errorf("%w: no loadable segment", ErrInvalidELF)
	}
	if !entryOK {
		return Result{}, fmt.Errorf("%w: entry point %#x is not in a loaded segment", ErrInvalidELF, h.entry)
	}
	return res, nil
}

// parseELFHeader reads and validates the ELF header.
func parseELFHeader(r io.ReaderAt, size int64) (elfHeader, error) {
	var b [elfHeaderSize]byte
	if size < elfHeaderSize {
		return elfHeader{}, fmt.Errorf("%w: file of %d bytes is shorter than an ELF64 header", ErrInvalidELF, size)
	}
	if err := readFull(r, b[:], 0); err != nil {
		return elfHeader{}, err
	}
	if [4]byte(b[:4]) != elfMagic {
		return elfHeader{}, fmt.Errorf("%w: bad magic %x", ErrInvalidELF, b[:4])
	}
	if b[elfIdentClass] != elfClass64 {
		return elfHeader{}, fmt.Errorf("%w: ELF class %d, want ELFCLASS64", ErrUnsupported, b[elfIdentClass])
	}
	if b[elfIdentData] != elfData2LSB {
		return elfHeader{}, fmt.Errorf("%w: ELF data encoding %d, want little endian", ErrUnsupported, b[elfIdentData])
	}
	if b[elfIdentVerOff] != elfVersion {
		return elfHeader{}, fmt.Errorf("%w: ident version %d", ErrInvalidELF, b[elfIdentVerOff])
	}
	le := binary.LittleEndian
	h := elfHeader{
		typ:       le.Uint16(b[16:]),
		machine:   le.Uint16(b[18:]),
		version:   le.Uint32(b[20:]),
		entry:     le.Uint64(b[24:]),
		phoff:     le.Uint64(b[32:]),
		ehsize:    le.Uint16(b[52:]),
		phentsize: le.Uint16(b[54:]),
		phnum:     le.Uint16(b[56:]),
	}
	switch {
	case h.typ != elfTypeExec:
		return h, fmt.Errorf("%w: ELF type %d, want ET_EXEC", ErrUnsupported, h.typ)
	case h.machine != elfMachineX64:
		return h, fmt.Errorf("%w: ELF machine %d, want x86-64", ErrUnsupported, h.machine)
	case h.version != elfVersion:
		return h, fmt.Errorf("%w: ELF version %d", ErrInvalidELF, h.version)
	case h.ehsize < elfHeaderSize:
		return h, fmt.Errorf("%w: e_ehsize %d", ErrInvalidELF, h.ehsize)
	case h.phentsize != elfPhdrSize:
		return h, fmt.Errorf("%w: e_phentsize %d, want %d", ErrInvalidELF, h.phentsize, elfPhdrSize)
	case h.phnum == 0:
		return h, fmt.Errorf("%w: no program headers", ErrInvalidELF)
	case h.phnum == elfPhnumXNum || h.phnum > elfMaxPhdrs:
		return h, fmt.Errorf("%w: %d program headers (at most %d)", ErrInvalidELF, h.phnum, elfMaxPhdrs)
	}
	tableLen := uint64(h.phnum) * elfPhdrSize
	if h.phoff < elfHeaderSize || h.phoff > uint64(size) || tableLen > uint64(size)-h.phoff {
		return h, fmt.Errorf("%w: program header table [%#x,+%#x) outside the file of %d bytes", ErrInvalidELF, h.phoff, tableLen, size)
	}
	return h, nil
}

// parsePhdrs reads and validates the program header table.
func parsePhdrs(r io.ReaderAt, size int64, h elfHeader) ([]elfPhdr, error) {
	buf := make([]byte, int(h.phnum)*elfPhdrSize)
	if err := readFull(r, buf, int64(h.phoff)); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	phdrs := make([]elfPhdr, h.phnum)
	for i := range phdrs {
		b := buf[i*elfPhdrSize:]
		p := elfPhdr{
			typ:    le.Uint32(b[0:]),
			off:    le.Uint64(b[8:]),
			paddr:  le.Uint64(b[24:]),
			filesz: le.Uint64(b[32:]),
			memsz:  le.Uint64(b[40:]),
		}
		phdrs[i] = p
		if p.typ != elfPTLoad {
			continue
		}
		if p.off > uint64(size) || p.filesz > uint64(size)-p.off {
			return nil, fmt.Errorf("%w: segment %d data [%#x,+%#x) outside the file of %d bytes", ErrInvalidELF, i, p.off, p.filesz, size)
		}
		if p.filesz > p.memsz {
			return nil, fmt.Errorf("%w: segment %d p_filesz %#x > p_memsz %#x", ErrInvalidELF, i, p.filesz, p.memsz)
		}
		if p.paddr+p.memsz < p.paddr {
			return nil, fmt.Errorf("%w: segment %d [%#x,+%#x) wraps", ErrInvalidELF, i, p.paddr, p.memsz)
		}
	}
	return phdrs, nil
}
