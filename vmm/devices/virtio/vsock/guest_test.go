package vsock_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
	"github.com/embervm/ember/vmm/memory"
)

// This file plays the guest's virtio-vsock driver on top of virtiotest.

const (
	guestCID  = 3
	memSize   = 16 << 20
	qSize     = 128
	rxBufSize = vsock.HeaderSize + 4096 // what Linux posts
	rxPosted  = 64
	txMax     = 64 // chains in flight
	waitLong  = 5 * time.Second
)

var queueBases = []uint64{0x100000, 0x400000, 0x700000}

// packet is one packet the guest received.
type packet struct {
	vsock.Header
	Data []byte
}

// guest is the simulated guest: memory, the transport, the driver's
// queues and what it received.
type guest struct {
	t    *testing.T
	mem  *memory.Guest
	irq  *virtiotest.Interrupt
	dev  *vsock.Device
	tr   *mmio.Transport
	drv  virtiotest.MMIO
	q    []*virtiotest.Queue
	path string

	rxBufs   map[uint16]virtiotest.Chain
	evBufs   map[uint16]virtiotest.Chain
	txOut    int
	noRefill bool      // do not give back receive buffers
	used     [3]uint16 // used elements taken, per queue
	inbox    []packet
	events   []uint32
}

// newGuest builds guest memory and a device listening in a temporary
// directory; it does not start the driver.
func newGuest(t *testing.T, tweak func(*vsock.Config)) *guest {
	t.Helper()
	mem, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: memSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	g := &guest{t: t, mem: mem, irq: &virtiotest.Interrupt{}, path: filepath.Join(t.TempDir(), "v.sock")}
	cfg := vsock.Config{GuestCID: guestCID, UDSPath: g.path, ConnectTimeout: 2 * time.Second}
	if tweak != nil {
		tweak(&cfg)
	}
	dev, err := vsock.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.attach(dev)
	return g
}

// attach puts dev behind a new transport.
func (g *guest) attach(dev *vsock.Device) {
	g.t.Helper()
	tr, err := mmio.New(mmio.Config{Device: dev, Memory: g.mem, Interrupt: g.irq})
	if err != nil {
		g.t.Fatal(err)
	}
	g.setDevice(dev, tr)
}

func (g *guest) setDevice(dev *vsock.Device, tr *mmio.Transport) {
	g.dev, g.tr = dev, tr
	g.drv = virtiotest.MMIO{T: g.t, Dev: tr}
	g.t.Cleanup(func() {
		tr.Close()
		dev.Close()
	})
}

// start runs the driver's initialization and posts receive and event
// buffers.
func (g *guest) start() {
	g.t.Helper()
	g.q = nil
	for _, b := range queueBases {
		g.q = append(g.q, virtiotest.NewQueue(g.t, g.mem, b, qSize))
	}
	g.rxBufs, g.evBufs, g.txOut, g.used = map[uint16]virtiotest.Chain{}, map[uint16]virtiotest.Chain{}, 0, [3]uint16{}
	g.drv.Init(virtio.FeatureVersion1|virtio.FeatureRingEventIdx|virtio.FeatureRingIndirectDesc, g.q...)
	for range rxPosted {
		g.postRx()
	}
	for range 4 {
		c := g.q[2].Add(virtiotest.In(vsock.EventSize))
		g.evBufs[c.Head] = c
	}
	g.drv.Kick(0)
	g.drv.Kick(2)
}

func (g *guest) postRx() {
	c := g.q[0].Add(virtiotest.In(rxBufSize))
	g.rxBufs[c.Head] = c
}

// send puts one packet (header and payload in one buffer) on the transmit
// queue and notifies the device.
func (g *guest) send(h vsock.Header, payload []byte) {
	g.t.Helper()
	g.sendBufs(virtiotest.Out(append(h.Encode(), payload...)))
}

// sendBufs puts a chain of raw buffers on the transmit queue.
func (g *guest) sendBufs(bufs ...virtiotest.Buf) {
	g.t.Helper()
	deadline := time.Now().Add(waitLong)
	for g.txOut >= txMax {
		g.poll()
		if g.txOut < txMax {
			break
		}
		if time.Now().After(deadline) {
			g.t.Fatal("transmit queue never drained")
		}
		g.wait(time.Until(deadline))
	}
	g.q[1].Add(bufs...)
	g.txOut++
	g.drv.Kick(1)
}

// hdr is a header from the guest's port src to the host's port dst.
func hdr(op vsock.Op, src, dst uint32) vsock.Header {
	return vsock.Header{SrcCID: guestCID, DstCID: vsock.HostCID, SrcPort: src, DstPort: dst,
		Type: vsock.TypeStream, Op: op, BufAlloc: 64 << 10}
}

// poll reaps used buffers of all queues and reposts receive buffers.
// Like Linux it then sets used_event (EVENT_IDX) to ask for an interrupt
// at the next used buffer.
func (g *guest) poll() {
	g.t.Helper()
	g.reap()
	for i, q := range g.q {
		q.SetUsedEvent(g.used[i])
	}
	g.reap() // what arrived before used_event was visible
}

func (g *guest) reap() {
	for {
		if _, ok := g.q[1].PopUsed(); !ok {
			break
		}
		g.used[1]++
		g.txOut--
	}
	reposted := false
	for {
		u, ok := g.q[0].PopUsed()
		if !ok {
			break
		}
		g.used[0]++
		c, ok := g.rxBufs[uint16(u.ID)]
		if !ok {
			g.t.Fatalf("device used receive buffer %d that is not posted", u.ID)
		}
		delete(g.rxBufs, uint16(u.ID))
		if u.Len < vsock.HeaderSize {
			g.t.Fatalf("receive buffer used with %d bytes", u.Len)
		}
		b := g.q[0].Read(c.Addrs[0], u.Len)
		h, _ := vsock.DecodeHeader(b)
		if uint32(len(b)-vsock.HeaderSize) != h.Len {
			g.t.Fatalf("packet %v in %d bytes", h, u.Len)
		}
		g.inbox = append(g.inbox, packet{Header: h, Data: b[vsock.HeaderSize:]})
		if !g.noRefill {
			g.postRx()
			reposted = true
		}
	}
	if reposted {
		g.drv.Kick(0)
	}
	for {
		u, ok := g.q[2].PopUsed()
		if !ok {
			break
		}
		g.used[2]++
		c := g.evBufs[uint16(u.ID)]
		delete(g.evBufs, uint16(u.ID))
		if u.Len != vsock.EventSize {
			g.t.Fatalf("event buffer used with %d bytes", u.Len)
		}
		g.events = append(g.events, binary.LittleEndian.Uint32(g.q[2].Read(c.Addrs[0], 4)))
	}
}

// wait waits for an interrupt (at most d).
func (g *guest) wait(d time.Duration) {
	n := g.irq.Count()
	g.poll()
	if len(g.inbox) == 0 {
		g.irq.WaitFor(n+1, d)
	}
}

// recv returns the next packet, failing the test after waitLong.
func (g *guest) recv() packet {
	g.t.Helper()
	p, ok := g.tryRecv(waitLong)
	if !ok {
		g.t.Fatalf("no packet from the device in %v", waitLong)
	}
	return p
}

// tryRecv returns the next packet if one arrives within d.
func (g *guest) tryRecv(d time.Duration) (packet, bool) {
	g.t.Helper()
	deadline := time.Now().Add(d)
	for {
		g.poll()
		if len(g.inbox) > 0 {
			p := g.inbox[0]
			g.inbox = g.inbox[1:]
			return p, true
		}
		left := time.Until(deadline)
		if left <= 0 {
			return packet{}, false
		}
		g.wait(left)
	}
}

// expect receives a packet and checks its operation and ports.
func (g *guest) expect(op vsock.Op, src, dst uint32) packet {
	g.t.Helper()
	p := g.recv()
	if p.Op != op || p.SrcPort != src || p.DstPort != dst || p.SrcCID != vsock.HostCID || p.DstCID != guestCID || p.Type != vsock.TypeStream {
		g.t.Fatalf("got %v, want %v %d->%d", p.Header, op, src, dst)
	}
	return p
}

// expectQuiet checks that no packet arrives for a while.
func (g *guest) expectQuiet(d time.Duration) {
	g.t.Helper()
	if p, ok := g.tryRecv(d); ok {
		g.t.Fatalf("unexpected packet %v", p.Header)
	}
}

// hostClient connects to the device's socket and sends CONNECT.
func (g *guest) hostClient(port uint32) (*net.UnixConn, *bufio.Reader) {
	g.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Net: "unix", Name: g.path})
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		g.t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// connectFromHost runs a host-initiated connect to guest port and returns
// the client, the host port the device chose and the REQUEST.
func (g *guest) connectFromHost(port uint32, guestBuf uint32) (*net.UnixConn, *bufio.Reader, uint32) {
	g.t.Helper()
	c, r := g.hostClient(port)
	req := g.recv()
	if req.Op != vsock.OpRequest || req.DstPort != port || req.DstCID != guestCID || req.SrcCID != vsock.HostCID {
		g.t.Fatalf("got %v, want REQUEST to port %d", req.Header, port)
	}
	h := hdr(vsock.OpResponse, port, req.SrcPort)
	h.BufAlloc = guestBuf
	g.send(h, nil)
	c.SetReadDeadline(time.Now().Add(waitLong))
	line, err := r.ReadString('\n')
	if err != nil {
		g.t.Fatalf("reading OK line: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	if want := fmt.Sprintf("OK %d\n", req.SrcPort); line != want {
		g.t.Fatalf("got %q, want %q", line, want)
	}
	return c, r, req.SrcPort
}

// listenPort listens on the device's U_P socket.
func (g *guest) listenPort(port uint32) *net.UnixListener {
	g.t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: fmt.Sprintf("%s_%d", g.path, port)})
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { ln.Close() })
	return ln
}

// readLine reads a line from the device's socket (with a deadline).
func readLine(t *testing.T, c net.Conn, r *bufio.Reader) (string, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLong))
	defer c.SetReadDeadline(time.Time{})
	s, err := r.ReadString('\n')
	return strings.TrimSuffix(s, "\n"), err
}
