package net_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/embervm/ember/internal/tap"
	"github.com/embervm/ember/internal/tap/taptest"
	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	vnet "github.com/embervm/ember/vmm/devices/virtio/net"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
	"github.com/embervm/ember/vmm/memory"
)

var (
	guestMAC = [6]byte{0x02, 0xee, 0, 0, 0, 2}
	hostMAC  = []byte{0x02, 0xee, 0, 0, 0, 1}
)

type fixture struct {
	ns  string
	tap *tap.Device
	dev *vnet.Device
	tr  *mmio.Transport
	irq *virtiotest.Interrupt
	drv virtiotest.MMIO
	rx  *virtiotest.Queue
	tx  *virtiotest.Queue
	ps  *taptest.PacketSocket
	mem *memory.Guest
}

// newFixture builds a TAP in a private namespace, the device over it and
// a driver that has brought the device up.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{ns: taptest.NetNS(t), irq: &virtiotest.Interrupt{}}
	var err error
	f.tap, err = tap.Create(tap.Config{Name: "embervnet0", MAC: hostMAC, NetNS: f.ns})
	if err != nil {
		t.Fatal(err)
	}
	f.ps = taptest.NewPacketSocket(t, f.ns, f.tap.Index())
	f.dev, err = vnet.New(vnet.Config{MAC: guestMAC, QueueSize: 16, HostDevName: f.tap.Name()}, f.tap)
	if err != nil {
		f.tap.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	f.mem, err = memory.NewAnonymous(memory.Range{GPA: 0, Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.mem.Close() })
	f.tr, err = mmio.New(mmio.Config{Device: f.dev, Memory: f.mem, Interrupt: f.irq})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.tr.Close() }) // runs before the device's Close
	f.drv = virtiotest.MMIO{T: t, Dev: f.tr}
	f.rx = virtiotest.NewQueue(t, f.mem, 0x100000, 16)
	f.tx = virtiotest.NewQueue(t, f.mem, 0x300000, 16)
	f.drv.Init(^uint64(0), f.rx, f.tx)
	return f
}

func hdr() []byte { return make([]byte, vnet.HdrSize) }

func TestConfigSpace(t *testing.T) {
	f := newFixture(t)
	if id := f.drv.Read32(mmio.RegDeviceID); id != uint32(virtio.TypeNet) {
		t.Fatalf("device ID %d", id)
	}
	if f.drv.DeviceFeatures()&vnet.FeatureMAC == 0 {
		t.Error("VIRTIO_NET_F_MAC not offered")
	}
	mac := make([]byte, 6)
	for i := range mac {
		f.tr.Read(mmio.ConfigSpace+uint64(i), mac[i:i+1])
	}
	if !bytes.Equal(mac, guestMAC[:]) {
		t.Errorf("config MAC %x", mac)
	}
}

func TestTransmit(t *testing.T) {
	tests := []struct {
		name string
		bufs func(frame []byte) []virtiotest.Buf
	}{
		{"header and frame in one buffer", func(fr []byte) []virtiotest.Buf {
			return []virtiotest.Buf{virtiotest.Out(append(hdr(), fr...))}
		}},
		{"header apart", func(fr []byte) []virtiotest.Buf {
			return []virtiotest.Buf{virtiotest.Out(hdr()), virtiotest.Out(fr)}
		}},
		{"guest asks for offload work", func(fr []byte) []virtiotest.Buf {
			h := hdr()
			h[0], h[1] = 1, 1 // NEEDS_CSUM, GSO_TCPV4: not negotiated, must not reach the host
			return []virtiotest.Buf{virtiotest.Out(h), virtiotest.Out(fr)}
		}},
	}
	f := newFixture(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := taptest.Frame(hostMAC, guestMAC[:], []byte{byte(i), 'g', 'u', 'e', 's', 't'})
			c := f.tx.Add(tt.bufs(frame)...)
			f.drv.Kick(vnet.TXQueue)
			if u := f.tx.MustPopUsed(); u.ID != uint32(c.Head) || u.Len != 0 {
				t.Fatalf("used %+v", u)
			}
			if got := f.ps.Receive(t, taptest.TestEtherType, 5*time.Second); !bytes.Equal(got, frame) {
				t.Fatalf("host saw %x, want %x", got, frame)
			}
		})
	}
	t.Run("too short", func(t *testing.T) {
		before := f.dev.Stats().TXDropped
		f.tx.Add(virtiotest.Out(hdr()[:8]))
		f.drv.Kick(vnet.TXQueue)
		if u := f.tx.MustPopUsed(); u.Len != 0 || f.dev.Stats().TXDropped != before+1 {
			t.Fatalf("used %+v, stats %+v", u, f.dev.Stats())
		}
	})
}

// receiveOne waits for the next used receive buffer and returns its
// contents.
func receiveOne(t *testing.T, f *fixture, bufs map[uint16]virtiotest.Chain) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f.dev.Pause() // a consistent view of the ring
		u, ok := f.rx.PopUsed()
		f.dev.Resume()
		if ok {
			c := bufs[uint16(u.ID)]
			return f.rx.Read(c.Addrs[0], u.Len)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("no frame received")
	return nil
}

func TestReceive(t *testing.T) {
	f := newFixture(t)
	bufs := map[uint16]virtiotest.Chain{}
	post := func() {
		f.dev.Pause()
		c := f.rx.Add(virtiotest.In(vnet.HdrSize + 1518))
		f.dev.Resume()
		bufs[c.Head] = c
		f.drv.Kick(vnet.RXQueue)
	}
	frame := taptest.Frame(guestMAC[:], hostMAC, []byte("from the host"))

	// No buffers yet: the frame waits (back-pressure), nothing is used.
	f.ps.Send(t, frame)
	time.Sleep(50 * time.Millisecond)
	if f.rx.UsedIdx() != 0 || f.irq.Count() != 0 {
		t.Fatalf("used idx %d, %d interrupts with no buffers", f.rx.UsedIdx(), f.irq.Count())
	}
	post()
	got := receiveOne(t, f, bufs)
	if len(got) != vnet.HdrSize+len(frame) || !bytes.Equal(got[vnet.HdrSize:], frame) {
		t.Fatalf("guest got %x, want header + %x", got, frame)
	}
	if nb := binary.LittleEndian.Uint16(got[10:]); nb != 1 || !bytes.Equal(got[:10], make([]byte, 10)) {
		t.Errorf("virtio-net header %x, want empty with num_buffers 1", got[:vnet.HdrSize])
	}
	if !f.irq.WaitFor(1, time.Second) {
		t.Error("no interrupt for the received frame")
	}

	// Several frames, several buffers.
	for i := 0; i < 3; i++ {
		post()
	}
	for i := 0; i < 3; i++ {
		f.ps.Send(t, taptest.Frame(guestMAC[:], hostMAC, []byte{'n', byte(i)}))
	}
	for i := 0; i < 3; i++ {
		got := receiveOne(t, f, bufs)
		if want := []byte{'n', byte(i)}; !bytes.Equal(got[vnet.HdrSize+14:vnet.HdrSize+16], want) {
			t.Errorf("frame %d payload %x", i, got[vnet.HdrSize+14:])
		}
	}

	// A buffer too small for the frame is kept, the frame dropped.
	f.dev.Pause()
	f.rx.Add(virtiotest.In(vnet.HdrSize + 10))
	f.dev.Resume()
	f.drv.Kick(vnet.RXQueue)
	f.ps.Send(t, frame)
	deadline := time.Now().Add(5 * time.Second)
	for f.dev.Stats().RXDropped == 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if s := f.dev.Stats(); s.RXDropped != 1 || s.RXFrames != 4 {
		t.Errorf("stats %+v", s)
	}
}

func TestPausedDeviceHoldsFrames(t *testing.T) {
	f := newFixture(t)
	c := f.rx.Add(virtiotest.In(2048))
	f.drv.Kick(vnet.RXQueue)
	f.tr.Pause()
	f.ps.Send(t, taptest.Frame(guestMAC[:], hostMAC, []byte("held")))
	time.Sleep(50 * time.Millisecond)
	if f.rx.UsedIdx() != 0 {
		t.Fatal("paused device delivered a frame")
	}
	st, err := f.tr.State()
	if err != nil || st.Queues[vnet.RXQueue].NextUsed != 0 {
		t.Fatalf("state %+v, %v", st, err)
	}
	f.tr.Resume()
	got := receiveOne(t, f, map[uint16]virtiotest.Chain{c.Head: c})
	if !bytes.HasSuffix(got, []byte("held")) {
		t.Errorf("got %x", got)
	}
}

func TestCloseRemovesTAP(t *testing.T) {
	ns := taptest.NetNS(t)
	td, err := tap.Create(tap.Config{Name: "embervnet1", NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	d, err := vnet.New(vnet.Config{MAC: guestMAC}, td)
	if err != nil {
		t.Fatal(err)
	}
	st := d.State()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromPath(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if _, err := nl.LinkByName("embervnet1"); err == nil {
		t.Fatal("TAP left behind")
	}
	// Restore rebuilds the device over a new TAP.
	td2, err := tap.Create(tap.Config{Name: "embervnet1", NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	d2, err := vnet.FromState(st, td2)
	if err != nil {
		t.Fatal(err)
	}
	if d2.State() != st {
		t.Errorf("state %+v, want %+v", d2.State(), st)
	}
	d2.Close()
}
