package virtio

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/embervm/ember/vmm/memory"
)

// QueueState is a split virtqueue's state as plain data: what the driver
// configured through the transport plus the device's position in the rings.
// It is what a snapshot saves, and all a Queue is rebuilt from.
type QueueState struct {
	// MaxSize is the largest size the device accepts (QueueNumMax).
	MaxSize uint16
	// Size is the number of descriptors the driver chose (QueueNum).
	Size uint16
	// Ready is the driver's QueueReady.
	Ready bool
	// DescTable, AvailRing and UsedRing are the rings' guest physical
	// addresses (QueueDesc, QueueDriver, QueueDevice).
	DescTable uint64
	AvailRing uint64
	UsedRing  uint64
	// NextAvail is the next available-ring slot the device will take.
	NextAvail uint16
	// NextUsed is the next used-ring slot the device will fill.
	NextUsed uint16
	// EventIdx is set when VIRTIO_RING_F_EVENT_IDX was negotiated.
	EventIdx bool
	// Indirect is set when VIRTIO_RING_F_INDIRECT_DESC was negotiated.
	Indirect bool
}

// Validate checks the driver-supplied part of the state against the spec
// and against guest memory.
func (s QueueState) Validate(mem memory.Accessor) error {
	if !s.Ready {
		return ErrQueueNotReady
	}
	if s.MaxSize == 0 || s.MaxSize > MaxQueueSize || s.Size == 0 || s.Size > s.MaxSize || s.Size&(s.Size-1) != 0 {
		return fmt.Errorf("%w: %d (max %d)", ErrQueueSize, s.Size, s.MaxSize)
	}
	for _, r := range []struct {
		name        string
		addr, align uint64
		size        uint64
	}{
		{"descriptor table", s.DescTable, descAlign, descTableSize(s.Size)},
		{"available ring", s.AvailRing, availAlign, availRingSize(s.Size)},
		{"used ring", s.UsedRing, usedAlign, usedRingSize(s.Size)},
	} {
		if r.addr%r.align != 0 {
			return fmt.Errorf("%w: %s at %#x", ErrAlignment, r.name, r.addr)
		}
		if _, err := mem.Slice(r.addr, r.size); err != nil {
			return fmt.Errorf("%w: %s [%#x,+%#x)", ErrRingOutOfMemory, r.name, r.addr, r.size)
		}
	}
	return nil
}

// Queue is a live split virtqueue, owned by one device. It is not safe for
// concurrent use: the device serializes its calls.
//
// The rings are shared with the guest, which may write them at any time;
// every value read from them is copied once and checked before use.
type Queue struct {
	st    QueueState
	mem   memory.Accessor
	desc  []byte
	avail []byte
	used  []byte
	// added counts used elements since the last NeedsNotification.
	added uint16
	// dropped counts chains handed back unused because they were invalid.
	dropped uint64
}

// NewQueue builds a live queue from its state (after driver setup, or from
// a snapshot). It fails if the state does not validate.
func NewQueue(mem memory.Accessor, st QueueState) (*Queue, error) {
	if err := st.Validate(mem); err != nil {
		return nil, err
	}
	q := &Queue{st: st, mem: mem}
	// Validate mapped each ring already; these cannot fail.
	var err error
	if q.desc, err = mem.Slice(st.DescTable, descTableSize(st.Size)); err != nil {
		return nil, err
	}
	if q.avail, err = mem.Slice(st.AvailRing, availRingSize(st.Size)); err != nil {
		return nil, err
	}
	if q.used, err = mem.Slice(st.UsedRing, usedRingSize(st.Size)); err != nil {
		return nil, err
	}
	return q, nil
}

// State returns the queue's state for a snapshot.
func (q *Queue) State() QueueState { return q.st }

// Size returns the number of descriptors.
func (q *Queue) Size() uint16 { return q.st.Size }

// Dropped returns how many invalid chains the queue handed back unused.
func (q *Queue) Dropped() uint64 { return q.dropped }

// fenceWord is the target of fence's locked instruction.
var fenceWord atomic.Uint64

// fence is a full memory barrier between ring accesses that the guest
// observes in order (a used element before the used index; avail_event
// before the re-read of the available index). Go's atomics are sequentially
// consistent, and on amd64 this is a LOCK-prefixed instruction, which also
// orders the plain loads and stores around it.
func fence() { fenceWord.Add(0) }

func (q *Queue) availIdx() uint16 { return binary.LittleEndian.Uint16(q.avail[2:]) }

func (q *Queue) availFlags() uint16 { return binary.LittleEndian.Uint16(q.avail[0:]) }

// usedEvent is the driver's used_event, at the end of the available ring.
func (q *Queue) usedEvent() uint16 {
	return binary.LittleEndian.Uint16(q.avail[4+2*uint64(q.st.Size):])
}

func (q *Queue) setAvailEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.used[4+8*uint64(q.st.Size):], v)
}

func (q *Queue) setUsedFlags(v uint16) { binary.LittleEndian.PutUint16(q.used[0:], v) }

// pending returns how many chains wait in the available ring.
func (q *Queue) pending() (uint16, error) {
	n := q.availIdx() - q.st.NextAvail
	if n > q.st.Size {
		return 0, fmt.Errorf("%w: avail idx %d, next %d, size %d", ErrAvailIndex, q.availIdx(), q.st.NextAvail, q.st.Size)
	}
	return n, nil
}

// HasPending reports whether the driver made chains available that the
// device has not taken yet.
func (q *Queue) HasPending() (bool, error) {
	n, err := q.pending()
	return n > 0, err
}

// Pop takes the next available chain. It returns nil, nil when the ring is
// empty. A chain that fails validation is handed back to the driver with
// length 0 and Pop moves on to the next one (Dropped counts them). An error
// means the ring itself is corrupt (available index or head out of range):
// the device should stop using the queue and ask for a reset.
func (q *Queue) Pop() (*Chain, error) {
	for {
		n, err := q.pending()
		if err != nil || n == 0 {
			return nil, err
		}
		slot := uint64(q.st.NextAvail & (q.st.Size - 1))
		head := binary.LittleEndian.Uint16(q.avail[4+2*slot:])
		if head >= q.st.Size {
			return nil, fmt.Errorf("%w: head %d in available slot %d, size %d", ErrDescIndex, head, slot, q.st.Size)
		}
		q.st.NextAvail++
		descs, err := parseChain(q.mem, q.desc, q.st.Size, head, q.st.Indirect)
		if err != nil {
			q.dropped++
			if err := q.AddUsed(head, 0); err != nil {
				return nil, err
			}
			continue
		}
		return &Chain{Head: head, Descs: descs, mem: q.mem}, nil
	}
}

// Undo puts the last popped chain back, for a device that popped a chain it
// cannot use yet (net receive without a frame).
func (q *Queue) Undo() { q.st.NextAvail-- }

// AddUsed returns chain head to the driver, with n bytes written into its
// writable buffers.
func (q *Queue) AddUsed(head uint16, n uint32) error {
	if head >= q.st.Size {
		return fmt.Errorf("%w: %d, size %d", ErrUsedIndex, head, q.st.Size)
	}
	slot := uint64(q.st.NextUsed & (q.st.Size - 1))
	e := q.used[4+8*slot : 4+8*slot+8]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], n)
	q.st.NextUsed++
	// The element must be visible before the index that publishes it.
	fence()
	binary.LittleEndian.PutUint16(q.used[2:], q.st.NextUsed)
	q.added++
	return nil
}

// NeedsNotification reports whether the driver wants an interrupt for the
// used elements added since the last call: always, unless it set
// VIRTQ_AVAIL_F_NO_INTERRUPT or (with EVENT_IDX) its used_event was not
// crossed. It returns false if nothing was added.
func (q *Queue) NeedsNotification() bool {
	added := q.added
	if added == 0 {
		return false
	}
	q.added = 0
	// Our used index must be visible before we read the driver's wishes.
	fence()
	if q.st.EventIdx {
		newIdx, oldIdx := q.st.NextUsed, q.st.NextUsed-added
		return newIdx-q.usedEvent()-1 < newIdx-oldIdx
	}
	return q.availFlags()&AvailFlagNoInterrupt == 0
}

// DisableNotification asks the driver not to notify the device while it
// drains the queue. With EVENT_IDX the avail_event the device last wrote
// already does that once crossed.
func (q *Queue) DisableNotification() {
	if !q.st.EventIdx {
		q.setUsedFlags(UsedFlagNoNotify)
	}
}

// EnableNotification asks the driver to notify the device again and
// reports whether chains arrived in the meantime; if so the device must
// drain again, or it would sleep on a non-empty queue.
func (q *Queue) EnableNotification() (bool, error) {
	if q.st.EventIdx {
		q.setAvailEvent(q.st.NextAvail)
	} else {
		q.setUsedFlags(0)
	}
	// The driver reads our flag after publishing its index; we read its
	// index after publishing our flag. One of us sees the other.
	fence()
	return q.HasPending()
}
