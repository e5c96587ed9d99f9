package vsock_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
)

func TestIdentityAndConfig(t *testing.T) {
	g := newGuest(t, nil)
	if got := g.drv.Read32(mmio.RegDeviceID); got != uint32(virtio.TypeVsock) {
		t.Errorf("device ID %d, want 19", got)
	}
	for i := range uint32(3) {
		g.drv.Write32(mmio.RegQueueSel, i)
		if got := g.drv.Read32(mmio.RegQueueNumMax); got != vsock.QueueSize {
			t.Errorf("queue %d max %d", i, got)
		}
	}
	g.drv.Write32(mmio.RegQueueSel, 3)
	if got := g.drv.Read32(mmio.RegQueueNumMax); got != 0 {
		t.Errorf("queue 3 exists (max %d)", got)
	}
	var cfg [8]byte
	g.tr.Read(mmio.ConfigSpace, cfg[:])
	if got := binary.LittleEndian.Uint64(cfg[:]); got != guestCID {
		t.Errorf("config guest_cid %d, want %d", got, guestCID)
	}
	var hi [4]byte
	g.tr.Read(mmio.ConfigSpace+4, hi[:])
	if binary.LittleEndian.Uint32(hi[:]) != 0 {
		t.Errorf("upper half of guest_cid %x", hi)
	}
	g.tr.Write(mmio.ConfigSpace, []byte{9, 9, 9, 9})
	g.tr.Read(mmio.ConfigSpace, cfg[:])
	if got := binary.LittleEndian.Uint64(cfg[:]); got != guestCID {
		t.Errorf("guest_cid writable: %d", got)
	}
}

func TestNewConfig(t *testing.T) {
	dir := t.TempDir()
	live, err := net.Listen("unix", dir+"/live")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Net: "unix", Name: dir + "/stale"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	tests := []struct {
		name string
		cfg  vsock.Config
		err  error
	}{
		{"ok", vsock.Config{GuestCID: 3, UDSPath: dir + "/ok"}, nil},
		{"host CID", vsock.Config{GuestCID: 2, UDSPath: dir + "/a"}, vsock.ErrConfig},
		{"zero CID", vsock.Config{UDSPath: dir + "/a"}, vsock.ErrConfig},
		{"CID_ANY", vsock.Config{GuestCID: 1<<32 - 1, UDSPath: dir + "/a"}, vsock.ErrConfig},
		{"no path", vsock.Config{GuestCID: 3}, vsock.ErrConfig},
		{"huge buffer", vsock.Config{GuestCID: 3, UDSPath: dir + "/a", BufAlloc: 1 << 30}, vsock.ErrConfig},
		{"live socket", vsock.Config{GuestCID: 3, UDSPath: dir + "/live"}, vsock.ErrAddrInUse},
		{"stale socket replaced", vsock.Config{GuestCID: 3, UDSPath: dir + "/stale"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := vsock.New(tt.cfg)
			if !errors.Is(err, tt.err) {
				t.Fatalf("New: %v, want %v", err, tt.err)
			}
			if err == nil {
				if err := d.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
}

func TestHostInitiated(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	c, r, hp := g.connectFromHost(1024, 64<<10)

	// Host to guest.
	if _, err := c.Write([]byte("hello guest\n")); err != nil {
		t.Fatal(err)
	}
	p := g.expect(vsock.OpRW, hp, 1024)
	if string(p.Data) != "hello guest\n" {
		t.Fatalf("guest got %q", p.Data)
	}
	if p.BufAlloc != vsock.DefaultBufAlloc {
		t.Errorf("device advertises buf_alloc %d", p.BufAlloc)
	}
	// Guest to host.
	h := hdr(vsock.OpRW, 1024, hp)
	h.Len = 11
	h.FwdCnt = uint32(len(p.Data))
	g.send(h, []byte("hello host\n"))
	if line, err := readLine(t, c, r); err != nil || line != "hello host" {
		t.Fatalf("host got %q, %v", line, err)
	}

	// The host closes: SHUTDOWN(SEND) to the guest; the guest closes:
	// SHUTDOWN(both), and the device answers RST.
	c.CloseWrite()
	sd := g.expect(vsock.OpShutdown, hp, 1024)
	if sd.Flags != vsock.ShutdownSend {
		t.Fatalf("shutdown flags %#x", sd.Flags)
	}
	s := hdr(vsock.OpShutdown, 1024, hp)
	s.Flags = vsock.ShutdownRcv | vsock.ShutdownSend
	g.send(s, nil)
	g.expect(vsock.OpRST, hp, 1024)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if b, err := io.ReadAll(r); err != nil || len(b) != 0 {
		t.Fatalf("host socket after RST: %q, %v", b, err)
	}
}

func TestHostInitiatedRefused(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	c, r := g.hostClient(77)
	req := g.recv()
	if req.Op != vsock.OpRequest || req.DstPort != 77 {
		t.Fatalf("got %v", req.Header)
	}
	g.send(hdr(vsock.OpRST, 77, req.SrcPort), nil)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if b, err := io.ReadAll(r); err != nil || len(b) != 0 {
		t.Fatalf("refused client read %q, %v; want EOF", b, err)
	}
	g.expectQuiet(100 * time.Millisecond) // no RST answers an RST
}

func TestHostConnectTimeout(t *testing.T) {
	g := newGuest(t, func(c *vsock.Config) { c.ConnectTimeout = 200 * time.Millisecond })
	g.start()
	c, r := g.hostClient(5)
	req := g.recv()
	if req.Op != vsock.OpRequest {
		t.Fatalf("got %v", req.Header)
	}
	// No answer: the device gives up, resets the guest side and closes
	// the client.
	g.expect(vsock.OpRST, req.SrcPort, 5)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if b, err := io.ReadAll(r); err != nil || len(b) != 0 {
		t.Fatalf("client read %q, %v; want EOF", b, err)
	}
	// A late RESPONSE names an unknown connection.
	g.send(hdr(vsock.OpResponse, 5, req.SrcPort), nil)
	g.expect(vsock.OpRST, req.SrcPort, 5)
}

func TestBadHandshake(t *testing.T) {
	tests := []struct{ name, send string }{
		{"not CONNECT", "HELLO 5\n"},
		{"bad port", "CONNECT x\n"},
		{"port too big", "CONNECT 4294967296\n"},
		{"too long", "CONNECT " + string(make([]byte, 100)) + "\n"},
		{"silent", ""},
	}
	g := newGuest(t, func(c *vsock.Config) { c.ConnectTimeout = 200 * time.Millisecond })
	g.start()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("unix", g.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte(tt.send))
			c.SetReadDeadline(time.Now().Add(waitLong))
			// EOF, or a reset if the device closed with bytes unread.
			if b, err := io.ReadAll(c); (err != nil && !errors.Is(err, syscall.ECONNRESET)) || len(b) != 0 {
				t.Fatalf("read %q, %v; want EOF", b, err)
			}
		})
	}
	g.expectQuiet(50 * time.Millisecond)
}

func TestGuestInitiated(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	ln := g.listenPort(52)
	g.send(hdr(vsock.OpRequest, 4000, 52), nil)
	hc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	g.expect(vsock.OpResponse, 52, 4000)

	h := hdr(vsock.OpRW, 4000, 52)
	h.Len = 5
	g.send(h, []byte("ping\n"))
	buf := make([]byte, 5)
	hc.SetReadDeadline(time.Now().Add(waitLong))
	if _, err := io.ReadFull(hc, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("host got %q, %v", buf, err)
	}
	hc.Write([]byte("pong\n"))
	if p := g.expect(vsock.OpRW, 52, 4000); string(p.Data) != "pong\n" {
		t.Fatalf("guest got %q", p.Data)
	}

	// Guest half-close: the host reads EOF but can still send.
	s := hdr(vsock.OpShutdown, 4000, 52)
	s.Flags = vsock.ShutdownSend
	g.send(s, nil)
	if b, err := io.ReadAll(hc); err != nil || len(b) != 0 {
		t.Fatalf("host read after guest SHUTDOWN(SEND): %q, %v", b, err)
	}
	hc.Write([]byte("late"))
	if p := g.expect(vsock.OpRW, 52, 4000); string(p.Data) != "late" {
		t.Fatalf("guest got %q", p.Data)
	}
	// The host closes too: SHUTDOWN(SEND), then RST ends it.
	hc.Close()
	g.expect(vsock.OpShutdown, 52, 4000)
	g.expect(vsock.OpRST, 52, 4000)
}

func TestGuestConnectNoListener(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	g.send(hdr(vsock.OpRequest, 4001, 9999), nil)
	g.expect(vsock.OpRST, 9999, 4001)
}

func TestGuestRSTClosesHost(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	c, r, hp := g.connectFromHost(1024, 64<<10)
	h := hdr(vsock.OpRW, 1024, hp)
	h.Len = 4
	g.send(h, []byte("last"))
	g.send(hdr(vsock.OpRST, 1024, hp), nil)
	// Bytes sent before the RST still reach the host, then EOF.
	c.SetReadDeadline(time.Now().Add(waitLong))
	if b, err := io.ReadAll(r); err != nil || string(b) != "last" {
		t.Fatalf("host read %q, %v", b, err)
	}
	g.expectQuiet(50 * time.Millisecond)
}

func TestUnknownConnection(t *testing.T) {
	tests := []struct {
		name string
		op   vsock.Op
		rst  bool
	}{
		{"RW", vsock.OpRW, true},
		{"RESPONSE", vsock.OpResponse, true},
		{"SHUTDOWN", vsock.OpShutdown, true},
		{"CREDIT_UPDATE", vsock.OpCreditUpdate, true},
		{"CREDIT_REQUEST", vsock.OpCreditRequest, true},
		{"RST", vsock.OpRST, false},
	}
	g := newGuest(t, nil)
	g.start()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g.t = t
			g.send(hdr(tt.op, 1234, 4321), nil)
			if tt.rst {
				g.expect(vsock.OpRST, 4321, 1234)
			} else {
				g.expectQuiet(50 * time.Millisecond)
			}
		})
	}
}
