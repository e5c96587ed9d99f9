package snapshot

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// File framing shared by the state and working-set files:
//
//	header  magic [8]byte | major u16 | minor u16 | flags u32 | bodyLen u64
//	body    sections: tag [4]byte | version u16 | reserved u16 | len u64 | payload
//	trailer CRC32C (Castagnoli) u32 of header and body
//
// All integers are little-endian. A reader refuses a newer major version and
// skips sections whose tag it does not know (a minor version may add them).

const (
	headerSize  = 24
	sectionHead = 16
	trailerSize = 4
	// maxStateFile bounds what a reader will load: far above any real
	// state (a few KiB per vCPU) and far below memory exhaustion.
	maxStateFile = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// section is one tagged, versioned, length-prefixed block of a file.
type section struct {
	tag     [4]byte
	version uint16
	payload []byte
}

// frame builds a complete file from sections.
func frame(magic [8]byte, major, minor uint16, sections []section) []byte {
	e := &encoder{}
	e.raw(magic[:])
	e.u16(major)
	e.u16(minor)
	e.u32(0)
	e.u64(0) // body length, patched below
	for _, s := range sections {
		e.raw(s.tag[:])
		e.u16(s.version)
		e.u16(0)
		e.u64(uint64(len(s.payload)))
		e.raw(s.payload)
	}
	binary.LittleEndian.PutUint64(e.b[16:], uint64(len(e.b)-headerSize))
	e.u32(crc32.Checksum(e.b, castagnoli))
	return e.b
}

// unframe checks a file's magic, version, length and checksum and splits
// its body into sections. maxMajor is the newest major version understood.
func unframe(b []byte, magic [8]byte, maxMajor uint16) (minor uint16, _ []section, _ error) {
	n := min(len(b), len(magic))
	if string(b[:n]) != string(magic[:n]) {
		return 0, nil, ErrBadMagic
	}
	if len(b) < headerSize+trailerSize {
		return 0, nil, fmt.Errorf("%w: %d bytes, header alone needs %d", ErrTruncated, len(b), headerSize+trailerSize)
	}
	d := &decoder{b: b[8:headerSize]}
	major, minor := d.u16(), d.u16()
	_ = d.u32() // flags: none defined
	bodyLen := d.u64()
	if major > maxMajor || major == 0 {
		return 0, nil, fmt.Errorf("%w: file is version %d.%d, this ember reads %d.x", ErrVersion, major, minor, maxMajor)
	}
	have := uint64(len(b) - headerSize - trailerSize)
	if bodyLen > have {
		return 0, nil, fmt.Errorf("%w: body of %d bytes declared, %d present", ErrTruncated, bodyLen, have)
	}
	if bodyLen < have {
		return 0, nil, fmt.Errorf("%w: %d bytes after the declared end", ErrCorrupt, have-bodyLen)
	}
	end := len(b) - trailerSize
	if got, want := crc32.Checksum(b[:end], castagnoli), binary.LittleEndian.Uint32(b[end:]); got != want {
		return 0, nil, fmt.Errorf("%w: CRC32C %#08x, file says %#08x", ErrChecksum, got, want)
	}
	var out []section
	d = &decoder{b: b[headerSize:end]}
	for d.remaining() > 0 {
		var s section
		copy(s.tag[:], d.take(4))
		s.version = d.u16()
		_ = d.u16()
		s.payload = d.take(d.u64())
		if d.err != nil {
			return 0, nil, fmt.Errorf("section %q: %w", s.tag[:], d.err)
		}
		out = append(out, s)
	}
	return minor, out, nil
}

// encoder appends little-endian values to a buffer.
type encoder struct{ b []byte }

func (e *encoder) raw(p []byte) { e.b = append(e.b, p...) }
func (e *encoder) u8(v uint8)   { e.b = append(e.b, v) }
func (e *encoder) u16(v uint16) { e.b = binary.LittleEndian.AppendUint16(e.b, v) }
func (e *encoder) u32(v uint32) { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *encoder) u64(v uint64) { e.b = binary.LittleEndian.AppendUint64(e.b, v) }

// bytes writes a u32 length and p.
func (e *encoder) bytes(p []byte) { e.u32(uint32(len(p))); e.raw(p) }

// fixed writes a fixed-size KVM ABI structure, prefixed by its encoded size
// so a reader can refuse a layout it does not know.
func (e *encoder) fixed(v any) {
	n := binary.Size(v)
	e.u32(uint32(n))
	var err error
	if e.b, err = binary.Append(e.b, binary.LittleEndian, v); err != nil {
		// Only fixed-size types are passed here; anything else is a bug.
		panic(fmt.Sprintf("snapshot: encoding %T: %v", v, err))
	}
}

// decoder reads little-endian values with bounds checks. The first failure
// sticks in err; later reads return zero values.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

// take returns the next n bytes, or nil after recording an error.
func (d *decoder) take(n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(d.remaining()) {
		d.fail("%d bytes wanted at offset %d, %d left", n, d.off, d.remaining())
		return nil
	}
	p := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// bytes reads a u32 length and that many bytes (a copy), at most max.
func (d *decoder) bytes(max uint32) []byte {
	n := d.u32()
	if n > max {
		d.fail("length %d exceeds limit %d", n, max)
		return nil
	}
	p := d.take(uint64(n))
	if p == nil {
		return nil
	}
	return append(make([]byte, 0, n), p...)
}

// count reads a u32 element count, checking that count elements of at
// least elemSize bytes each can still follow.
func (d *decoder) count(elemSize int, max uint32) int {
	n := d.u32()
	if n > max || uint64(n)*uint64(elemSize) > uint64(d.remaining()) {
		d.fail("count %d (limit %d, %d bytes left)", n, max, d.remaining())
		return 0
	}
	return int(n)
}

// fixed reads a structure written by encoder.fixed into v (a pointer).
func (d *decoder) fixed(v any) {
	want := binary.Size(v)
	n := d.u32()
	if d.err == nil && int(n) != want {
		d.fail("%T encoded in %d bytes, want %d", v, n, want)
	}
	p := d.take(uint64(want))
	if p == nil {
		return
	}
	if _, err := binary.Decode(p, binary.LittleEndian, v); err != nil {
		d.fail("decoding %T: %v", v, err)
	}
}

// done fails if any of the payload was left unread.
func (d *decoder) done() error {
	if d.err == nil && d.remaining() != 0 {
		d.fail("%d unread bytes", d.remaining())
	}
	return d.err
}
