package virtiotest

import (
	"encoding/binary"
	"testing"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/memory"
)

// DataSize is the room each Queue reserves for buffers after its rings.
const DataSize = 1 << 20

// Queue is the driver's side of one split virtqueue in guest memory.
type Queue struct {
	t    testing.TB
	mem  memory.Accessor
	Size uint16
	// Desc, Avail and Used are the rings' guest physical addresses.
	Desc, Avail, Used uint64
	// Data is the start of the buffer area (DataSize bytes).
	Data uint64

	nextData uint64
	nextDesc uint16
	availIdx uint16
	usedIdx  uint16
}

// NewQueue lays out a queue of size entries at base (16-byte aligned),
// followed by DataSize bytes of buffer space; all of it must be guest
// memory. The rings start zeroed.
func NewQueue(t testing.TB, mem memory.Accessor, base uint64, size uint16) *Queue {
	t.Helper()
	q := &Queue{t: t, mem: mem, Size: size, Desc: base}
	q.Avail = q.Desc + 16*uint64(size)
	q.Used = align(q.Avail+6+2*uint64(size), 4)
	q.Data = align(q.Used+6+8*uint64(size), 4096)
	q.nextData = q.Data
	q.write(q.Desc, make([]byte, q.Data-q.Desc))
	return q
}

func align(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// End returns the first address after the queue's buffer area.
func (q *Queue) End() uint64 { return q.Data + DataSize }

// State returns the queue's configuration as the driver would write it to
// the transport (ready, nothing consumed yet).
func (q *Queue) State(maxSize uint16) virtio.QueueState {
	return virtio.QueueState{MaxSize: maxSize, Size: q.Size, Ready: true, DescTable: q.Desc, AvailRing: q.Avail, UsedRing: q.Used}
}

// Buf is one buffer of a chain the test builds.
type Buf struct {
	// Data is what a device-readable buffer holds.
	Data []byte
	// Len is a device-writable buffer's size.
	Len uint32
	// Write marks a device-writable buffer.
	Write bool
}

// Out is a device-readable buffer holding data.
func Out(data []byte) Buf { return Buf{Data: data, Len: uint32(len(data))} }

// In is a device-writable buffer of n bytes.
func In(n uint32) Buf { return Buf{Len: n, Write: true} }

// Chain is a chain the test made available.
type Chain struct {
	Head uint16
	// Addrs are the guest addresses of the buffers, in order.
	Addrs []uint64
	Bufs  []Buf
}

// Alloc reserves n bytes (16-byte aligned) of buffer space.
func (q *Queue) Alloc(n uint64) uint64 {
	q.t.Helper()
	a := align(q.nextData, 16)
	if a+n > q.Data+DataSize {
		a = q.Data // wrap: tests reuse old buffers
		if a+n > q.Data+DataSize {
			q.t.Fatalf("virtiotest: buffer of %d bytes does not fit", n)
		}
	}
	q.nextData = a + n
	return a
}

// place allocates and fills the buffers.
func (q *Queue) place(bufs []Buf) []uint64 {
	addrs := make([]uint64, len(bufs))
	for i, b := range bufs {
		addrs[i] = q.Alloc(uint64(b.Len))
		if b.Write {
			q.write(addrs[i], make([]byte, b.Len))
		} else {
			q.write(addrs[i], b.Data)
		}
	}
	return addrs
}

func descFor(addr uint64, b Buf) virtio.Descriptor {
	d := virtio.Descriptor{Addr: addr, Len: b.Len}
	if b.Write {
		d.Flags |= virtio.DescFlagWrite
	}
	return d
}

// Add builds a direct chain of bufs in consecutive descriptors and makes
// it available.
func (q *Queue) Add(bufs ...Buf) Chain {
	q.t.Helper()
	addrs := q.place(bufs)
	head := q.nextDesc % q.Size
	for i, b := range bufs {
		idx := (head + uint16(i)) % q.Size
		d := descFor(addrs[i], b)
		if i < len(bufs)-1 {
			d.Flags |= virtio.DescFlagNext
			d.Next = (idx + 1) % q.Size
		}
		q.WriteDesc(idx, d)
	}
	q.nextDesc = head + uint16(len(bufs))
	q.Publish(head)
	return Chain{Head: head, Addrs: addrs, Bufs: bufs}
}

// AddIndirect builds bufs as an indirect table referenced from one
// descriptor and makes it available.
func (q *Queue) AddIndirect(bufs ...Buf) Chain {
	q.t.Helper()
	addrs := q.place(bufs)
	table := q.Alloc(16 * uint64(len(bufs)))
	for i, b := range bufs {
		d := descFor(addrs[i], b)
		if i < len(bufs)-1 {
			d.Flags |= virtio.DescFlagNext
			d.Next = uint16(i + 1)
		}
		q.write(table+16*uint64(i), EncodeDesc(d))
	}
	head := q.nextDesc % q.Size
	q.nextDesc = head + 1
	q.WriteDesc(head, virtio.Descriptor{Addr: table, Len: 16 * uint32(len(bufs)), Flags: virtio.DescFlagIndirect})
	q.Publish(head)
	return Chain{Head: head, Addrs: addrs, Bufs: bufs}
}

// EncodeDesc returns a descriptor's 16 bytes as they sit in a table.
func EncodeDesc(d virtio.Descriptor) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b[0:], d.Addr)
	binary.LittleEndian.PutUint32(b[8:], d.Len)
	binary.LittleEndian.PutUint16(b[12:], d.Flags)
	binary.LittleEndian.PutUint16(b[14:], d.Next)
	return b
}

// WriteDesc writes descriptor i of the table as is (for broken chains).
func (q *Queue) WriteDesc(i uint16, d virtio.Descriptor) {
	q.t.Helper()
	q.write(q.Desc+16*uint64(i), EncodeDesc(d))
}

// Publish puts head in the next available slot and bumps the available
// index.
func (q *Queue) Publish(head uint16) {
	q.t.Helper()
	q.put16(q.Avail+4+2*uint64(q.availIdx%q.Size), head)
	q.availIdx++
	q.put16(q.Avail+2, q.availIdx)
}

// SetAvailIdx overwrites the available index (to corrupt the ring).
func (q *Queue) SetAvailIdx(v uint16) { q.availIdx = v; q.put16(q.Avail+2, v) }

// SetAvailFlags writes the available ring's flags (VIRTQ_AVAIL_F_NO_INTERRUPT).
func (q *Queue) SetAvailFlags(v uint16) { q.put16(q.Avail, v) }

// SetUsedEvent writes used_event (EVENT_IDX).
func (q *Queue) SetUsedEvent(v uint16) { q.put16(q.Avail+4+2*uint64(q.Size), v) }

// UsedFlags reads the used ring's flags (VIRTQ_USED_F_NO_NOTIFY).
func (q *Queue) UsedFlags() uint16 { return q.get16(q.Used) }

// AvailEvent reads avail_event (EVENT_IDX).
func (q *Queue) AvailEvent() uint16 { return q.get16(q.Used + 4 + 8*uint64(q.Size)) }

// UsedIdx reads the device's used index.
func (q *Queue) UsedIdx() uint16 { return q.get16(q.Used + 2) }

// Used is one used-ring element.
type Used struct {
	ID  uint32
	Len uint32
}

// PopUsed returns the next used element, false if the device has not
// added one.
func (q *Queue) PopUsed() (Used, bool) {
	q.t.Helper()
	if q.UsedIdx() == q.usedIdx {
		return Used{}, false
	}
	var b [8]byte
	q.read(b[:], q.Used+4+8*uint64(q.usedIdx%q.Size))
	q.usedIdx++
	return Used{ID: binary.LittleEndian.Uint32(b[0:]), Len: binary.LittleEndian.Uint32(b[4:])}, true
}

// MustPopUsed is PopUsed that fails the test when nothing was used.
func (q *Queue) MustPopUsed() Used {
	q.t.Helper()
	u, ok := q.PopUsed()
	if !ok {
		q.t.Fatalf("virtiotest: no used element (used idx %d)", q.UsedIdx())
	}
	return u
}

// Read returns n bytes of guest memory at addr.
func (q *Queue) Read(addr uint64, n uint32) []byte {
	q.t.Helper()
	b := make([]byte, n)
	q.read(b, addr)
	return b
}

// Write copies b into guest memory at addr.
func (q *Queue) Write(addr uint64, b []byte) { q.t.Helper(); q.write(addr, b) }

func (q *Queue) read(b []byte, addr uint64) {
	q.t.Helper()
	if err := q.mem.ReadAt(b, addr); err != nil {
		q.t.Fatalf("virtiotest: %v", err)
	}
}

func (q *Queue) write(addr uint64, b []byte) {
	q.t.Helper()
	if err := q.mem.WriteAt(b, addr); err != nil {
		q.t.Fatalf("virtiotest: %v", err)
	}
}

func (q *Queue) put16(addr uint64, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	q.write(addr, b[:])
}

func (q *Queue) get16(addr uint64) uint16 {
	var b [2]byte
	q.read(b[:], addr)
	return binary.LittleEndian.Uint16(b[:])
}
