package mmio_test

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
	"github.com/embervm/ember/vmm/memory"
)

const (
	memSize      = 8 << 20
	testFeature  = uint64(1) << 5
	allFeatures  = virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc | testFeature
	base         = 0xd0000000
	statusActive = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK
)

// echo is a device that copies each chain's readable bytes to its
// writable buffers.
type echo struct {
	mu          sync.Mutex
	sizes       []uint16
	config      [8]byte
	act         *virtio.Activation
	paused      bool
	pending     map[int]bool
	failAct     error
	activations int
	resets      int
}

func newEcho() *echo {
	return &echo{sizes: []uint16{16, 8}, config: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, pending: map[int]bool{}}
}

func (e *echo) Type() virtio.DeviceType { return virtio.TypeConsole }
func (e *echo) Features() uint64        { return allFeatures }
func (e *echo) QueueMaxSizes() []uint16 { return e.sizes }
func (e *echo) ReadConfig(off uint64, data []byte) {
	clear(data)
	if off < uint64(len(e.config)) {
		copy(data, e.config[off:])
	}
}
func (e *echo) WriteConfig(off uint64, data []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if off < uint64(len(e.config)) {
		copy(e.config[off:], data)
	}
}
func (e *echo) Activate(a virtio.Activation) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failAct != nil {
		return e.failAct
	}
	e.act = &a
	e.activations++
	return nil
}
func (e *echo) Notify(i int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.act == nil {
		return
	}
	if e.paused {
		e.pending[i] = true
		return
	}
	e.process(i)
}
func (e *echo) process(i int) {
	virtio.Process(e.act.Queues[i], e.act.Signal, func(c *virtio.Chain) uint32 {
		b := make([]byte, c.Reader().Len())
		c.Reader().Read(b)
		w := c.Writer()
		w.Write(b)
		return w.Written()
	})
}
func (e *echo) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.act = nil
	e.resets++
}
func (e *echo) Pause() { e.mu.Lock(); e.paused = true; e.mu.Unlock() }
func (e *echo) Resume() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.paused = false
	for i := range e.pending {
		if e.act != nil {
			e.process(i)
		}
		delete(e.pending, i)
	}
}

type fixture struct {
	mem *memory.Guest
	dev *echo
	irq *virtiotest.Interrupt
	tr  *mmio.Transport
	drv virtiotest.MMIO
	q   []*virtiotest.Queue
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	mem, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: memSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	f := &fixture{mem: mem, dev: newEcho(), irq: &virtiotest.Interrupt{}}
	f.tr, err = mmio.New(mmio.Config{Device: f.dev, Memory: mem, Interrupt: f.irq})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.tr.Close() })
	f.drv = virtiotest.MMIO{T: t, Dev: f.tr}
	f.q = []*virtiotest.Queue{
		virtiotest.NewQueue(t, mem, 0x100000, 16),
		virtiotest.NewQueue(t, mem, 0x300000, 8),
	}
	return f
}

func TestIdentityRegisters(t *testing.T) {
	f := newFixture(t)
	for _, r := range []struct {
		off  uint64
		want uint32
	}{
		{mmio.RegMagicValue, 0x74726976},
		{mmio.RegVersion, 2},
		{mmio.RegDeviceID, uint32(virtio.TypeConsole)},
		{mmio.RegVendorID, mmio.VendorID},
		{mmio.RegStatus, 0},
		{mmio.RegQueueNumMax, 16},
		{mmio.RegConfigGeneration, 0},
	} {
		if got := f.drv.Read32(r.off); got != r.want {
			t.Errorf("register %#x = %#x, want %#x", r.off, got, r.want)
		}
	}
	if got := f.drv.DeviceFeatures(); got != allFeatures {
		t.Errorf("device features %#x, want %#x", got, allFeatures)
	}
	f.drv.Write32(mmio.RegQueueSel, 1)
	if got := f.drv.Read32(mmio.RegQueueNumMax); got != 8 {
		t.Errorf("queue 1 max %d", got)
	}
	f.drv.Write32(mmio.RegQueueSel, 2)
	if got := f.drv.Read32(mmio.RegQueueNumMax); got != 0 {
		t.Errorf("missing queue 2 max %d, want 0", got)
	}
	f.drv.Write32(mmio.RegDeviceFeaturesSel, 7)
	if got := f.drv.Read32(mmio.RegDeviceFeatures); got != 0 {
		t.Errorf("feature word 7 = %#x, want 0", got)
	}
}

func TestFeatureNegotiation(t *testing.T) {
	tests := []struct {
		name string
		want uint64
		ok   bool
	}{
		{"version 1 only", virtio.FeatureVersion1, true},
		{"everything offered", allFeatures, true},
		{"legacy driver without VERSION_1", testFeature | virtio.FeatureRingEventIdx, false},
		{"nothing", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			st := f.drv.Negotiate(tt.want)
			if got := st&virtio.StatusFeaturesOK != 0; got != tt.ok {
				t.Fatalf("FEATURES_OK = %v (status %#x), want %v", got, st, tt.ok)
			}
		})
	}
	t.Run("feature not offered", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Write32(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
		f.drv.Write32(mmio.RegDriverFeaturesSel, 1)
		f.drv.Write32(mmio.RegDriverFeatures, 1|1<<10) // VERSION_1 and bit 42
		f.drv.Write32(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
		if st := f.drv.Read32(mmio.RegStatus); st&virtio.StatusFeaturesOK != 0 {
			t.Fatalf("FEATURES_OK accepted with an unoffered feature (status %#x)", st)
		}
	})
	t.Run("features frozen after FEATURES_OK", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Init(virtio.FeatureVersion1, f.q...)
		f.drv.Write32(mmio.RegDriverFeaturesSel, 0)
		f.drv.Write32(mmio.RegDriverFeatures, uint32(testFeature))
		if got := f.dev.act.Features; got != virtio.FeatureVersion1 {
			t.Errorf("negotiated features %#x", got)
		}
	})
	t.Run("features before DRIVER ignored", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Write32(mmio.RegDriverFeaturesSel, 1)
		f.drv.Write32(mmio.RegDriverFeatures, 1)
		f.drv.Write32(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
		f.drv.Write32(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
		if st := f.drv.Read32(mmio.RegStatus); st&virtio.StatusFeaturesOK != 0 {
			t.Fatalf("features written before DRIVER were kept (status %#x)", st)
		}
	})
}

func TestStatusStateMachine(t *testing.T) {
	const ack, drv, fok, dok = virtio.StatusAcknowledge, virtio.StatusDriver, virtio.StatusFeaturesOK, virtio.StatusDriverOK
	t.Run("DRIVER_OK before FEATURES_OK", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Write32(mmio.RegStatus, ack)
		f.drv.Write32(mmio.RegStatus, ack|drv)
		f.drv.Write32(mmio.RegStatus, ack|drv|dok)
		if st := f.drv.Read32(mmio.RegStatus); st != ack|drv || f.tr.Active() {
			t.Fatalf("status %#x active %v", st, f.tr.Active())
		}
	})
	t.Run("clearing bits without reset", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Init(virtio.FeatureVersion1, f.q...)
		f.drv.Write32(mmio.RegStatus, ack|drv)
		if st := f.drv.Read32(mmio.RegStatus); st != statusActive || !f.tr.Active() {
			t.Fatalf("status %#x active %v", st, f.tr.Active())
		}
	})
	t.Run("reset", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Init(virtio.FeatureVersion1, f.q...)
		f.q[0].Add(virtiotest.Out([]byte("x")), virtiotest.In(1))
		f.drv.Kick(0)
		f.drv.Write32(mmio.RegQueueSel, 1)
		f.drv.Write32(mmio.RegStatus, 0)
		if f.dev.resets != 1 || f.tr.Active() {
			t.Fatalf("resets %d active %v", f.dev.resets, f.tr.Active())
		}
		for _, r := range []uint64{mmio.RegStatus, mmio.RegInterruptStatus, mmio.RegQueueReady, mmio.RegQueueSel} {
			if got := f.drv.Read32(r); got != 0 {
				t.Errorf("register %#x = %#x after reset", r, got)
			}
		}
		// A notification after reset reaches nothing.
		f.drv.Kick(0)
		// And the device can be brought up again.
		f.drv.Init(virtio.FeatureVersion1, f.q...)
		if f.dev.activations != 2 {
			t.Errorf("activations %d", f.dev.activations)
		}
	})
	t.Run("FAILED", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Write32(mmio.RegStatus, ack)
		f.drv.Write32(mmio.RegStatus, ack|virtio.StatusFailed)
		if st := f.drv.Read32(mmio.RegStatus); st != ack|virtio.StatusFailed {
			t.Fatalf("status %#x", st)
		}
	})
	t.Run("activation failure", func(t *testing.T) {
		f := newFixture(t)
		f.dev.failAct = errors.New("no backend")
		st := f.drv.Negotiate(virtio.FeatureVersion1)
		f.drv.SetupQueue(0, f.q[0])
		f.drv.SetupQueue(1, f.q[1])
		f.drv.Write32(mmio.RegStatus, st|dok)
		if st := f.drv.Read32(mmio.RegStatus); st&virtio.StatusNeedsReset == 0 || f.tr.Active() {
			t.Fatalf("status %#x active %v", st, f.tr.Active())
		}
		if f.drv.Read32(mmio.RegInterruptStatus)&virtio.InterruptConfigChange == 0 || f.irq.Count() != 1 {
			t.Errorf("no configuration-change interrupt")
		}
	})
}

func TestQueueSetup(t *testing.T) {
	tests := []struct {
		name string
		mod  func(f *fixture)
		ok   bool
	}{
		{"good", func(*fixture) {}, true},
		{"size not power of two", func(f *fixture) { f.drv.Write32(mmio.RegQueueNum, 12) }, false},
		{"size above max", func(f *fixture) { f.drv.Write32(mmio.RegQueueNum, 32) }, false},
		{"size huge", func(f *fixture) { f.drv.Write32(mmio.RegQueueNum, 1<<16) }, false},
		{"not ready", func(f *fixture) { f.drv.Write32(mmio.RegQueueReady, 0) }, false},
		{"ring outside memory", func(f *fixture) {
			f.drv.Write32(mmio.RegQueueDeviceLow, 0)
			f.drv.Write32(mmio.RegQueueDeviceHigh, 1)
		}, false},
		{"misaligned descriptor table", func(f *fixture) { f.drv.Write32(mmio.RegQueueDescLow, uint32(f.q[0].Desc)+8) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			st := f.drv.Negotiate(virtio.FeatureVersion1)
			f.drv.SetupQueue(1, f.q[1])
			f.drv.SetupQueue(0, f.q[0]) // leaves QueueSel at 0
			tt.mod(f)
			f.drv.Write32(mmio.RegStatus, st|virtio.StatusDriverOK)
			got := f.drv.Read32(mmio.RegStatus)
			if ok := got&virtio.StatusNeedsReset == 0 && f.tr.Active(); ok != tt.ok {
				t.Fatalf("status %#x active %v, want ok=%v", got, f.tr.Active(), tt.ok)
			}
		})
	}
	t.Run("setup after DRIVER_OK ignored", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Init(virtio.FeatureVersion1, f.q...)
		f.drv.Write32(mmio.RegQueueSel, 0)
		f.drv.Write32(mmio.RegQueueReady, 0)
		if f.drv.Read32(mmio.RegQueueReady) != 1 {
			t.Error("QueueReady changed after DRIVER_OK")
		}
	})
	t.Run("setup before FEATURES_OK ignored", func(t *testing.T) {
		f := newFixture(t)
		f.drv.Write32(mmio.RegQueueReady, 1)
		if f.drv.Read32(mmio.RegQueueReady) != 0 {
			t.Error("QueueReady set before FEATURES_OK")
		}
	})
}

func TestNotifyAndInterrupt(t *testing.T) {
	f := newFixture(t)
	f.drv.Init(virtio.FeatureVersion1|virtio.FeatureRingIndirectDesc, f.q...)
	c := f.q[1].Add(virtiotest.Out([]byte("ping")), virtiotest.In(4))
	ci := f.q[1].AddIndirect(virtiotest.Out([]byte("pong")), virtiotest.In(4))
	f.drv.Kick(1)
	for _, want := range []struct {
		c    virtiotest.Chain
		data string
	}{{c, "ping"}, {ci, "pong"}} {
		u := f.q[1].MustPopUsed()
		if u.ID != uint32(want.c.Head) || u.Len != 4 || string(f.q[1].Read(want.c.Addrs[1], 4)) != want.data {
			t.Fatalf("used %+v, buffer %q", u, f.q[1].Read(want.c.Addrs[1], 4))
		}
	}
	if f.irq.Count() != 1 {
		t.Errorf("%d interrupts, want 1", f.irq.Count())
	}
	if st := f.drv.AckInterrupt(); st != virtio.InterruptUsedBuffer {
		t.Errorf("InterruptStatus %#x", st)
	}
	if st := f.drv.Read32(mmio.RegInterruptStatus); st != 0 {
		t.Errorf("InterruptStatus %#x after ACK", st)
	}
}

func TestCorruptRingNeedsReset(t *testing.T) {
	f := newFixture(t)
	f.drv.Init(virtio.FeatureVersion1, f.q...)
	f.q[0].SetAvailIdx(100)
	f.drv.Kick(0)
	if st := f.drv.Read32(mmio.RegStatus); st&virtio.StatusNeedsReset == 0 {
		t.Fatalf("status %#x, want DEVICE_NEEDS_RESET", st)
	}
	if f.drv.Read32(mmio.RegInterruptStatus)&virtio.InterruptConfigChange == 0 {
		t.Error("no configuration-change interrupt")
	}
	f.drv.Write32(mmio.RegStatus, 0)
	if st := f.drv.Read32(mmio.RegStatus); st != 0 {
		t.Fatalf("status %#x after reset", st)
	}
}

func TestOddAccesses(t *testing.T) {
	f := newFixture(t)
	f.drv.Init(virtio.FeatureVersion1, f.q...)
	for _, a := range []struct {
		off uint64
		n   int
	}{{mmio.RegMagicValue, 2}, {mmio.RegMagicValue + 1, 4}, {mmio.RegStatus, 8}, {0x0f0, 4}, {mmio.RegQueueNotify, 4}} {
		b := []byte{9, 9, 9, 9, 9, 9, 9, 9}[:a.n]
		if err := f.tr.Read(a.off, b); err != nil {
			t.Errorf("read %#x/%d: %v", a.off, a.n, err)
		}
		for _, x := range b {
			if x != 0 {
				t.Errorf("read %#x/%d = %x, want zeros", a.off, a.n, b)
				break
			}
		}
		if err := f.tr.Write(a.off, b); err != nil {
			t.Errorf("write %#x/%d: %v", a.off, a.n, err)
		}
	}
	f.drv.Kick(7)           // no such queue
	f.drv.Write32(0x0f0, 1) // unknown register
	if st := f.drv.Read32(mmio.RegStatus); st != statusActive {
		t.Errorf("status %#x after odd accesses", st)
	}
}

func TestConfigSpace(t *testing.T) {
	f := newFixture(t)
	b := make([]byte, 2)
	if err := f.tr.Read(mmio.ConfigSpace+2, b); err != nil || b[0] != 3 || b[1] != 4 {
		t.Fatalf("config read %x, %v", b, err)
	}
	// Writes before DRIVER are dropped.
	f.tr.Write(mmio.ConfigSpace, []byte{0xaa})
	f.drv.Write32(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	f.tr.Write(mmio.ConfigSpace+1, []byte{0xbb})
	if f.dev.config[0] != 1 || f.dev.config[1] != 0xbb {
		t.Fatalf("config %x", f.dev.config)
	}
}

func TestIOEventFDs(t *testing.T) {
	f := newFixture(t)
	var evs []mmio.IOEvent
	if err := f.tr.AttachIOEventFDs(base, func(e mmio.IOEvent) error { evs = append(evs, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := f.tr.AttachIOEventFDs(base, func(mmio.IOEvent) error { return nil }); !errors.Is(err, mmio.ErrAttached) {
		t.Errorf("second attach: %v", err)
	}
	if len(evs) != 2 {
		t.Fatalf("%d ioevents", len(evs))
	}
	for i, e := range evs {
		if e.Addr != base+mmio.RegQueueNotify || e.Len != 4 || e.DataMatch != uint64(i) || e.Queue != i || e.FD < 0 {
			t.Errorf("ioevent %d = %+v", i, e)
		}
	}
	if got := f.tr.IOEvents(base); got[1] != evs[1] {
		t.Errorf("IOEvents = %+v", got)
	}
	f.drv.Init(virtio.FeatureVersion1, f.q...)
	f.q[1].Add(virtiotest.Out([]byte("kick")), virtiotest.In(4))
	// What KVM does when the guest writes 1 to QueueNotify.
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(evs[1].FD, one[:]); err != nil {
		t.Fatal(err)
	}
	if !f.irq.WaitFor(1, 5*time.Second) {
		t.Fatal("no interrupt after the ioeventfd was signalled")
	}
	f.dev.mu.Lock()
	u := f.q[1].MustPopUsed()
	f.dev.mu.Unlock()
	if u.Len != 4 {
		t.Errorf("used %+v", u)
	}
	if err := f.tr.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSaveRestore(t *testing.T) {
	f := newFixture(t)
	f.drv.Init(virtio.FeatureVersion1|virtio.FeatureRingEventIdx, f.q...)
	f.q[0].Add(virtiotest.Out([]byte("one")), virtiotest.In(3))
	f.drv.Kick(0)
	f.q[0].MustPopUsed()
	if _, err := f.tr.State(); !errors.Is(err, mmio.ErrNotPaused) {
		t.Fatalf("State while running: %v", err)
	}
	f.tr.Pause()
	// Made available while paused: not processed, but saved.
	c := f.q[0].Add(virtiotest.Out([]byte("two")), virtiotest.In(3))
	f.drv.Kick(0)
	if _, ok := f.q[0].PopUsed(); ok {
		t.Fatal("paused device processed a chain")
	}
	st, err := f.tr.State()
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != statusActive || st.Queues[0].NextAvail != 1 || st.Queues[0].NextUsed != 1 || !st.Queues[0].EventIdx {
		t.Fatalf("state %+v", st)
	}
	// A new device and transport over the same memory carry on.
	dev2 := newEcho()
	irq2 := &virtiotest.Interrupt{}
	tr2, err := mmio.Restore(mmio.Config{Device: dev2, Memory: f.mem, Interrupt: irq2}, st)
	if err != nil {
		t.Fatal(err)
	}
	defer tr2.Close()
	if !tr2.Active() || dev2.activations != 1 {
		t.Fatalf("restored transport active %v, activations %d", tr2.Active(), dev2.activations)
	}
	u := f.q[0].MustPopUsed()
	if u.ID != uint32(c.Head) || string(f.q[0].Read(c.Addrs[1], 3)) != "two" {
		t.Fatalf("used %+v after restore", u)
	}
	drv2 := virtiotest.MMIO{T: t, Dev: tr2}
	if got := drv2.Read32(mmio.RegStatus); got != statusActive {
		t.Errorf("restored status %#x", got)
	}
	f.q[0].Add(virtiotest.Out([]byte("three")), virtiotest.In(5))
	drv2.Kick(0)
	if u := f.q[0].MustPopUsed(); u.Len != 5 {
		t.Errorf("used %+v", u)
	}

	t.Run("mismatched device", func(t *testing.T) {
		bad := st
		bad.Queues = st.Queues[:1]
		if _, err := mmio.Restore(mmio.Config{Device: newEcho(), Memory: f.mem, Interrupt: irq2}, bad); !errors.Is(err, mmio.ErrBadState) {
			t.Errorf("Restore with one queue: %v", err)
		}
		bad = st
		bad.Queues = append([]virtio.QueueState(nil), st.Queues...)
		bad.Queues[0].UsedRing = memSize
		if _, err := mmio.Restore(mmio.Config{Device: newEcho(), Memory: f.mem, Interrupt: irq2}, bad); !errors.Is(err, mmio.ErrBadState) {
			t.Errorf("Restore with a ring outside memory: %v", err)
		}
	})
}

func TestNewRejects(t *testing.T) {
	mem, _ := memory.NewAnonymous(memory.Range{GPA: 0, Size: 1 << 20})
	defer mem.Close()
	noQueues := newEcho()
	noQueues.sizes = nil
	badSize := newEcho()
	badSize.sizes = []uint16{12}
	for name, dev := range map[string]virtio.Device{"no queues": noQueues, "bad queue size": badSize, "nil": nil} {
		if _, err := mmio.New(mmio.Config{Device: dev, Memory: mem, Interrupt: &virtiotest.Interrupt{}}); !errors.Is(err, mmio.ErrBadDevice) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCmdline(t *testing.T) {
	tests := []struct {
		size, base uint64
		irq        uint32
		want       string
	}{
		{mmio.Size, 0xd0000000, 5, "virtio_mmio.device=4K@0xd0000000:5"},
		{1 << 20, 0xd0100000, 23, "virtio_mmio.device=1M@0xd0100000:23"},
		{0x200, 0xd0000000, 6, "virtio_mmio.device=512@0xd0000000:6"},
	}
	for _, tt := range tests {
		if got := mmio.Cmdline(tt.size, tt.base, tt.irq); got != tt.want {
			t.Errorf("Cmdline(%#x, %#x, %d) = %q, want %q", tt.size, tt.base, tt.irq, got, tt.want)
		}
	}
}
