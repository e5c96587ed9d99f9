package virtio_test

import (
	"errors"
	"testing"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
)

func TestQueueStateValidate(t *testing.T) {
	mem := newMem(t)
	good := virtio.QueueState{MaxSize: 256, Size: 16, Ready: true, DescTable: 0x1000, AvailRing: 0x2000, UsedRing: 0x3000}
	tests := []struct {
		name string
		mod  func(*virtio.QueueState)
		want error
	}{
		{"good", func(*virtio.QueueState) {}, nil},
		{"not ready", func(s *virtio.QueueState) { s.Ready = false }, virtio.ErrQueueNotReady},
		{"size zero", func(s *virtio.QueueState) { s.Size = 0 }, virtio.ErrQueueSize},
		{"size not power of two", func(s *virtio.QueueState) { s.Size = 24 }, virtio.ErrQueueSize},
		{"size above max", func(s *virtio.QueueState) { s.Size = 512 }, virtio.ErrQueueSize},
		{"max zero", func(s *virtio.QueueState) { s.MaxSize, s.Size = 0, 0 }, virtio.ErrQueueSize},
		{"desc misaligned", func(s *virtio.QueueState) { s.DescTable = 0x1008 }, virtio.ErrAlignment},
		{"avail misaligned", func(s *virtio.QueueState) { s.AvailRing = 0x2001 }, virtio.ErrAlignment},
		{"used misaligned", func(s *virtio.QueueState) { s.UsedRing = 0x3002 }, virtio.ErrAlignment},
		{"desc outside memory", func(s *virtio.QueueState) { s.DescTable = memSize }, virtio.ErrRingOutOfMemory},
		{"avail runs past memory", func(s *virtio.QueueState) { s.AvailRing = memSize - 16 }, virtio.ErrRingOutOfMemory},
		{"used wraps", func(s *virtio.QueueState) { s.UsedRing = ^uint64(0) - 3 }, virtio.ErrRingOutOfMemory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.mod(&s)
			_, err := virtio.NewQueue(mem, s)
			if tt.want == nil && err != nil || !errors.Is(err, tt.want) {
				t.Fatalf("NewQueue = %v, want %v", err, tt.want)
			}
		})
	}
}

// newQueue lays out a driver queue and the device queue over it.
func newQueue(t *testing.T, size uint16, mod func(*virtio.QueueState)) (*virtiotest.Queue, *virtio.Queue) {
	t.Helper()
	mem := newMem(t)
	vq := virtiotest.NewQueue(t, mem, 0x100000, size)
	st := vq.State(size)
	if mod != nil {
		mod(&st)
	}
	q, err := virtio.NewQueue(mem, st)
	if err != nil {
		t.Fatal(err)
	}
	return vq, q
}

func TestPopAddUsed(t *testing.T) {
	vq, q := newQueue(t, 4, nil)
	if c, err := q.Pop(); c != nil || err != nil {
		t.Fatalf("Pop on empty ring = %v, %v", c, err)
	}
	// Wrap the ring several times.
	for i := 0; i < 10; i++ {
		want := vq.Add(virtiotest.Out([]byte{byte(i)}), virtiotest.In(4))
		c, err := q.Pop()
		if err != nil || c == nil || c.Head != want.Head {
			t.Fatalf("round %d: Pop = %+v, %v; want head %d", i, c, err, want.Head)
		}
		if err := q.AddUsed(c.Head, 3); err != nil {
			t.Fatal(err)
		}
		if u := vq.MustPopUsed(); u.ID != uint32(want.Head) || u.Len != 3 {
			t.Fatalf("round %d: used %+v", i, u)
		}
	}
	if err := q.AddUsed(4, 0); !errors.Is(err, virtio.ErrUsedIndex) {
		t.Errorf("AddUsed(size) = %v, want ErrUsedIndex", err)
	}
}

func TestPopBadChains(t *testing.T) {
	tests := []struct {
		name  string
		build func(vq *virtiotest.Queue)
		// fatal: Pop fails (ring corrupt); otherwise the chain is dropped
		// (returned with length 0) and the next good chain is popped.
		fatal error
	}{
		{"address outside memory", func(vq *virtiotest.Queue) {
			vq.WriteDesc(0, virtio.Descriptor{Addr: memSize + 0x1000, Len: 8})
			vq.Publish(0)
		}, nil},
		{"length overflow", func(vq *virtiotest.Queue) {
			vq.WriteDesc(0, virtio.Descriptor{Addr: 0xffff_ffff_ffff_f000, Len: 0x2000})
			vq.Publish(0)
		}, nil},
		{"looped next", func(vq *virtiotest.Queue) {
			vq.WriteDesc(0, virtio.Descriptor{Addr: vq.Data, Len: 8, Flags: virtio.DescFlagNext, Next: 1})
			vq.WriteDesc(1, virtio.Descriptor{Addr: vq.Data, Len: 8, Flags: virtio.DescFlagNext, Next: 0})
			vq.Publish(0)
		}, nil},
		{"next index at size", func(vq *virtiotest.Queue) {
			vq.WriteDesc(0, virtio.Descriptor{Addr: vq.Data, Len: 8, Flags: virtio.DescFlagNext, Next: 8})
			vq.Publish(0)
		}, nil},
		{"zero length", func(vq *virtiotest.Queue) {
			vq.WriteDesc(0, virtio.Descriptor{Addr: vq.Data})
			vq.Publish(0)
		}, nil},
		{"head index at size", func(vq *virtiotest.Queue) { vq.Publish(8) }, virtio.ErrDescIndex},
		{"available index jumps", func(vq *virtiotest.Queue) { vq.SetAvailIdx(9) }, virtio.ErrAvailIndex},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vq, q := newQueue(t, 8, nil)
			tt.build(vq)
			if tt.fatal != nil {
				if _, err := q.Pop(); !errors.Is(err, tt.fatal) {
					t.Fatalf("Pop = %v, want %v", err, tt.fatal)
				}
				return
			}
			// Skip the descriptors the bad chain used.
			vq.WriteDesc(2, virtio.Descriptor{Addr: vq.Data + 64, Len: 8})
			vq.Publish(2)
			c, err := q.Pop()
			if err != nil || c == nil || c.Head != 2 {
				t.Fatalf("Pop = %+v, %v; want the good chain 2", c, err)
			}
			if q.Dropped() != 1 {
				t.Errorf("Dropped = %d, want 1", q.Dropped())
			}
			if u := vq.MustPopUsed(); u.ID != 0 || u.Len != 0 {
				t.Errorf("bad chain returned as %+v, want {0 0}", u)
			}
		})
	}
}

func TestNeedsNotification(t *testing.T) {
	t.Run("no event idx", func(t *testing.T) {
		vq, q := newQueue(t, 8, nil)
		if q.NeedsNotification() {
			t.Error("notification without used elements")
		}
		vq.Add(virtiotest.In(1))
		c, _ := q.Pop()
		q.AddUsed(c.Head, 1)
		if !q.NeedsNotification() {
			t.Error("no notification after AddUsed")
		}
		vq.SetAvailFlags(virtio.AvailFlagNoInterrupt)
		vq.Add(virtiotest.In(1))
		c, _ = q.Pop()
		q.AddUsed(c.Head, 1)
		if q.NeedsNotification() {
			t.Error("notification despite VIRTQ_AVAIL_F_NO_INTERRUPT")
		}
	})
	t.Run("event idx", func(t *testing.T) {
		vq, q := newQueue(t, 8, func(s *virtio.QueueState) { s.EventIdx = true })
		// The driver wants an interrupt when used idx passes 2 (after the
		// third element).
		vq.SetUsedEvent(2)
		want := []bool{false, false, true, false}
		for i, w := range want {
			vq.Add(virtiotest.In(1))
			c, _ := q.Pop()
			q.AddUsed(c.Head, 1)
			if got := q.NeedsNotification(); got != w {
				t.Errorf("element %d: NeedsNotification = %v, want %v", i, got, w)
			}
		}
	})
}

func TestNotificationSuppression(t *testing.T) {
	t.Run("flags", func(t *testing.T) {
		vq, q := newQueue(t, 8, nil)
		q.DisableNotification()
		if vq.UsedFlags() != virtio.UsedFlagNoNotify {
			t.Errorf("used flags %#x after Disable", vq.UsedFlags())
		}
		vq.Add(virtiotest.In(1))
		more, err := q.EnableNotification()
		if err != nil || !more || vq.UsedFlags() != 0 {
			t.Errorf("Enable = %v, %v, flags %#x; want true (a chain arrived), flags 0", more, err, vq.UsedFlags())
		}
	})
	t.Run("event idx", func(t *testing.T) {
		vq, q := newQueue(t, 8, func(s *virtio.QueueState) { s.EventIdx = true })
		vq.Add(virtiotest.In(1))
		vq.Add(virtiotest.In(1))
		q.Pop()
		q.Pop()
		more, err := q.EnableNotification()
		if err != nil || more || vq.AvailEvent() != 2 {
			t.Errorf("Enable = %v, %v, avail_event %d; want false, 2", more, err, vq.AvailEvent())
		}
	})
}

// recorder is a virtio.Signaller that counts.
type recorder struct{ used, config, reset int }

func (r *recorder) UsedBuffer() error    { r.used++; return nil }
func (r *recorder) ConfigChanged() error { r.config++; return nil }
func (r *recorder) NeedsReset(error)     { r.reset++ }

func TestProcess(t *testing.T) {
	vq, q := newQueue(t, 8, nil)
	for i := 0; i < 5; i++ {
		vq.Add(virtiotest.Out([]byte{byte(i)}), virtiotest.In(1))
	}
	var sig recorder
	var seen []byte
	err := virtio.Process(q, &sig, func(c *virtio.Chain) uint32 {
		b := make([]byte, 1)
		c.Reader().Read(b)
		seen = append(seen, b[0])
		c.Writer().Write([]byte{b[0] + 100})
		return 1
	})
	if err != nil || len(seen) != 5 || sig.used != 1 || sig.reset != 0 {
		t.Fatalf("Process = %v, seen %v, %+v; want 5 chains, one interrupt", err, seen, sig)
	}
	if vq.UsedFlags() != 0 {
		t.Error("notifications left disabled")
	}
	vq.SetAvailIdx(vq.UsedIdx() + 20)
	if err := virtio.Process(q, &sig, func(*virtio.Chain) uint32 { return 0 }); !errors.Is(err, virtio.ErrAvailIndex) || sig.reset != 1 {
		t.Fatalf("Process on corrupt ring = %v, resets %d", err, sig.reset)
	}
}

func TestQueueStateMidStream(t *testing.T) {
	mem := newMem(t)
	vq := virtiotest.NewQueue(t, mem, 0x100000, 4)
	q, err := virtio.NewQueue(mem, vq.State(4))
	if err != nil {
		t.Fatal(err)
	}
	var heads []uint16
	for i := 0; i < 6; i++ { // more than the size: the ring wraps
		if i == 3 {
			// Consume three, then snapshot with one outstanding chain.
			for j := 0; j < 3; j++ {
				c, _ := q.Pop()
				q.AddUsed(c.Head, uint32(j))
				vq.MustPopUsed()
			}
		}
		heads = append(heads, vq.Add(virtiotest.In(1)).Head)
	}
	st := q.State()
	if st.NextAvail != 3 || st.NextUsed != 3 {
		t.Fatalf("state %+v", st)
	}
	// A new queue built from the saved state carries on where this one
	// stopped.
	q2, err := virtio.NewQueue(mem, st)
	if err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 6; i++ {
		c, err := q2.Pop()
		if err != nil || c == nil || c.Head != heads[i] {
			t.Fatalf("restored Pop %d = %+v, %v; want head %d", i, c, err, heads[i])
		}
		q2.AddUsed(c.Head, 7)
		if u := vq.MustPopUsed(); u.ID != uint32(heads[i]) || u.Len != 7 {
			t.Fatalf("used %+v", u)
		}
	}
	if c, err := q2.Pop(); c != nil || err != nil {
		t.Fatalf("restored queue has extra chain %+v, %v", c, err)
	}
}
