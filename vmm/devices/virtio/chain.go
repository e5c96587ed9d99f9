package virtio

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/embervm/ember/vmm/memory"
)

// Descriptor is one validated buffer of a chain: [Addr, Addr+Len) lies in
// guest memory and Len > 0.
type Descriptor struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Writable reports whether the device may write the buffer (and must not
// read it).
func (d Descriptor) Writable() bool { return d.Flags&DescFlagWrite != 0 }

func decodeDescriptor(b []byte) Descriptor {
	return Descriptor{
		Addr:  binary.LittleEndian.Uint64(b[0:]),
		Len:   binary.LittleEndian.Uint32(b[8:]),
		Flags: binary.LittleEndian.Uint16(b[12:]),
		Next:  binary.LittleEndian.Uint16(b[14:]),
	}
}

// Chain is a validated descriptor chain taken from a queue's available
// ring: its device-readable buffers come first, then its device-writable
// ones. Indirect tables are already flattened into Descs.
type Chain struct {
	// Head is the index to give back to the driver in the used ring.
	Head uint16
	// Descs are the buffers in chain order.
	Descs []Descriptor

	mem memory.Accessor
}

// Readable returns the device-readable buffers.
func (c *Chain) Readable() []Descriptor { return c.Descs[:c.split()] }

// Writable returns the device-writable buffers.
func (c *Chain) Writable() []Descriptor { return c.Descs[c.split():] }

func (c *Chain) split() int {
	for i, d := range c.Descs {
		if d.Writable() {
			return i
		}
	}
	return len(c.Descs)
}

// Reader returns a reader over the chain's device-readable buffers.
func (c *Chain) Reader() *Reader { return &Reader{mem: c.mem, descs: c.Readable()} }

// Writer returns a writer over the chain's device-writable buffers.
func (c *Chain) Writer() *Writer { return &Writer{mem: c.mem, descs: c.Writable()} }

// inMemory reports whether [gpa, gpa+n) is guest memory. Accessors that can
// say so cheaply (*memory.Guest) are asked; others must map the range as
// one slice, which is stricter.
func inMemory(mem memory.Accessor, gpa, n uint64) bool {
	if c, ok := mem.(interface{ Contains(gpa, n uint64) bool }); ok {
		return c.Contains(gpa, n)
	}
	_, err := mem.Slice(gpa, n)
	return err == nil
}

// parseChain reads and validates the chain starting at head in the
// descriptor table table (size entries). Indirect descriptors are followed
// only if indirect is set. Every descriptor is copied out of guest memory
// once and checked before it is used, so a driver that rewrites the table
// concurrently cannot get an unchecked value past it.
func parseChain(mem memory.Accessor, table []byte, size, head uint16, indirect bool) ([]Descriptor, error) {
	if uint64(len(table)) < descTableSize(size) {
		return nil, fmt.Errorf("%w: table of %d bytes for %d descriptors", ErrDescIndex, len(table), size)
	}
	if head >= size {
		return nil, fmt.Errorf("%w: head %d, queue size %d", ErrDescIndex, head, size)
	}
	var (
		descs       []Descriptor
		idx         = head
		n           = size // entries in the current table
		inIndirect  bool
		seenWritten bool
		// limit bounds the chain: no longer than the queue (spec 2.7.5.3.1),
		// which also stops a chain whose next indexes loop.
		limit = int(size)
	)
	for {
		d := decodeDescriptor(table[uint64(idx)*DescriptorSize:])
		if d.Flags&DescFlagIndirect != 0 {
			switch {
			case !indirect:
				return nil, fmt.Errorf("%w: not negotiated", ErrIndirect)
			case inIndirect:
				return nil, fmt.Errorf("%w: nested", ErrIndirect)
			case d.Flags&DescFlagNext != 0:
				return nil, fmt.Errorf("%w: has NEXT set", ErrIndirect)
			case len(descs) > 0:
				return nil, fmt.Errorf("%w: not alone in its chain", ErrIndirect)
			case d.Len == 0 || d.Len%DescriptorSize != 0:
				return nil, fmt.Errorf("%w: table length %d", ErrIndirect, d.Len)
			case uint64(d.Len)/DescriptorSize > uint64(limit):
				return nil, fmt.Errorf("%w: indirect table of %d descriptors, queue size %d",
					ErrChainTooLong, d.Len/DescriptorSize, size)
			}
			if d.Addr+uint64(d.Len) < d.Addr {
				return nil, fmt.Errorf("%w: indirect table [%#x,+%#x)", ErrBufferWraps, d.Addr, d.Len)
			}
			t := make([]byte, d.Len)
			if err := mem.ReadAt(t, d.Addr); err != nil {
				return nil, fmt.Errorf("%w: indirect table [%#x,+%#x): %v", ErrBufferOutOfMemory, d.Addr, d.Len, err)
			}
			table, n, idx, inIndirect = t, uint16(d.Len/DescriptorSize), 0, true
			continue
		}
		if d.Len == 0 {
			return nil, fmt.Errorf("%w: index %d", ErrZeroLength, idx)
		}
		end := d.Addr + uint64(d.Len)
		if end < d.Addr {
			return nil, fmt.Errorf("%w: [%#x,+%#x)", ErrBufferWraps, d.Addr, d.Len)
		}
		if !inMemory(mem, d.Addr, uint64(d.Len)) {
			return nil, fmt.Errorf("%w: [%#x,+%#x)", ErrBufferOutOfMemory, d.Addr, d.Len)
		}
		w := d.Writable()
		if !w && seenWritten {
			return nil, fmt.Errorf("%w: index %d", ErrReadAfterWrite, idx)
		}
		seenWritten = seenWritten || w
		if len(descs) >= limit || len(descs) >= int(n) {
			return nil, fmt.Errorf("%w: more than %d descriptors", ErrChainTooLong, min(limit, int(n)))
		}
		descs = append(descs, d)
		if d.Flags&DescFlagNext == 0 {
			return descs, nil
		}
		if d.Next >= n {
			return nil, fmt.Errorf("%w: next %d, table size %d", ErrDescIndex, d.Next, n)
		}
		idx = d.Next
	}
}

// Reader reads a chain's device-readable buffers in order. It implements
// io.Reader.
type Reader struct {
	mem   memory.Accessor
	descs []Descriptor
	off   uint32 // into descs[0]
}

// Len returns the number of bytes left to read.
func (r *Reader) Len() uint64 {
	var n uint64
	for _, d := range r.descs {
		n += uint64(d.Len)
	}
	return n - uint64(r.off)
}

// Read implements io.Reader; it returns io.EOF at the end of the buffers.
func (r *Reader) Read(p []byte) (int, error) {
	done := 0
	for len(p) > 0 && len(r.descs) > 0 {
		d := r.descs[0]
		k := min(uint64(len(p)), uint64(d.Len-r.off))
		if err := r.mem.ReadAt(p[:k], d.Addr+uint64(r.off)); err != nil {
			return done, err
		}
		done += int(k)
		p = p[k:]
		r.advance(uint32(k))
	}
	if done == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return done, nil
}

func (r *Reader) advance(k uint32) {
	r.off += k
	if r.off == r.descs[0].Len {
		r.descs, r.off = r.descs[1:], 0
	}
}

// Writer writes a chain's device-writable buffers in order. It implements
// io.Writer.
type Writer struct {
	mem     memory.Accessor
	descs   []Descriptor
	off     uint32 // into descs[0]
	written uint64
}

// Written returns the number of bytes written so far: the length to put in
// the used ring.
// Chains longer than 4 GiB report 4 GiB - 1, the most the used ring holds.
func (w *Writer) Written() uint32 { return uint32(min(w.written, 1<<32-1)) }

// Len returns the room left.
func (w *Writer) Len() uint64 {
	var n uint64
	for _, d := range w.descs {
		n += uint64(d.Len)
	}
	return n - uint64(w.off)
}

// Write implements io.Writer. It writes as much as fits and returns
// io.ErrShortWrite if p does not fit.
func (w *Writer) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 && len(w.descs) > 0 {
		d := w.descs[0]
		k := min(uint64(len(p)), uint64(d.Len-w.off))
		if err := w.mem.WriteAt(p[:k], d.Addr+uint64(w.off)); err != nil {
			return done, err
		}
		done += int(k)
		w.written += k
		p = p[k:]
		w.off += uint32(k)
		if w.off == d.Len {
			w.descs, w.off = w.descs[1:], 0
		}
	}
	if len(p) > 0 {
		return done, io.ErrShortWrite
	}
	return done, nil
}
