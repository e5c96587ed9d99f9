package vsock_test

import (
	"io"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
)

// TestMalformedPackets sends packets no driver should, each on a fresh
// device, and checks the answer (RST or silence) and that the device
// still serves a new connection afterwards.
func TestMalformedPackets(t *testing.T) {
	rw := func(n uint32) vsock.Header { h := hdr(vsock.OpRW, 1, 2); h.Len = n; return h }
	with := func(h vsock.Header, f func(*vsock.Header)) vsock.Header { f(&h); return h }
	tests := []struct {
		name string
		bufs []virtiotest.Buf
		// rst is the answer's source CID, 0 for no answer.
		rst uint64
	}{
		{"short header", []virtiotest.Buf{virtiotest.Out(make([]byte, 20))}, 0},
		{"len beyond the buffer", []virtiotest.Buf{virtiotest.Out(append(rw(100).Encode(), make([]byte, 10)...))}, vsock.HostCID},
		{"len 4 GiB-1", []virtiotest.Buf{virtiotest.Out(rw(1<<32 - 1).Encode())}, vsock.HostCID},
		{"unknown op", []virtiotest.Buf{virtiotest.Out(hdr(99, 1, 2).Encode())}, vsock.HostCID},
		{"op INVALID", []virtiotest.Buf{virtiotest.Out(hdr(vsock.OpInvalid, 1, 2).Encode())}, vsock.HostCID},
		{"wrong dst_cid", []virtiotest.Buf{virtiotest.Out(with(hdr(vsock.OpRequest, 1, 2), func(h *vsock.Header) { h.DstCID = 7 }).Encode())}, 7},
		{"seqpacket type", []virtiotest.Buf{virtiotest.Out(with(hdr(vsock.OpRequest, 1, 2), func(h *vsock.Header) { h.Type = 2 }).Encode())}, vsock.HostCID},
		{"spoofed src_cid", []virtiotest.Buf{virtiotest.Out(with(hdr(vsock.OpRequest, 1, 2), func(h *vsock.Header) { h.SrcCID = 9 }).Encode())}, 0},
		{"no readable buffer", []virtiotest.Buf{virtiotest.In(64)}, 0},
		{"header split over buffers, len beyond", []virtiotest.Buf{
			virtiotest.Out(rw(8).Encode()[:10]), virtiotest.Out(rw(8).Encode()[10:]), virtiotest.Out([]byte{1, 2, 3}),
		}, vsock.HostCID},
		{"RST is never answered", []virtiotest.Buf{virtiotest.Out(with(hdr(vsock.OpRST, 1, 2), func(h *vsock.Header) { h.DstCID = 7 }).Encode())}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, nil)
			g.start()
			g.sendBufs(tt.bufs...)
			if tt.rst == 0 {
				g.expectQuiet(50 * time.Millisecond)
			} else {
				p := g.recv()
				if p.Op != vsock.OpRST || p.SrcCID != tt.rst || p.DstCID != guestCID || p.SrcPort != 2 || p.DstPort != 1 {
					t.Fatalf("got %v, want RST from %d:2 to %d:1", p.Header, tt.rst, guestCID)
				}
			}
			if st := g.tr.Status(); st&virtio.StatusNeedsReset != 0 {
				t.Fatalf("device needs reset (status %#x)", st)
			}
			c, _, _ := g.connectFromHost(1024, 4096)
			c.Write([]byte("x"))
			if p := g.recv(); p.Op != vsock.OpRW || string(p.Data) != "x" {
				t.Fatalf("after the bad packet: %v", p.Header)
			}
		})
	}
}

// TestMalformedResetsConnection: a bad packet naming an established
// connection ends it, and only it.
func TestMalformedResetsConnection(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	c1, r1, hp1 := g.connectFromHost(1024, 4096)
	c2, _, hp2 := g.connectFromHost(1025, 4096)
	h := hdr(vsock.OpRW, 1024, hp1)
	h.Len = 1000
	g.send(h, []byte("short"))
	g.expect(vsock.OpRST, hp1, 1024)
	c1.SetReadDeadline(time.Now().Add(waitLong))
	if b, err := io.ReadAll(r1); err != nil || len(b) != 0 {
		t.Fatalf("reset connection's host read %q, %v", b, err)
	}
	c2.Write([]byte("still here"))
	if p := g.expect(vsock.OpRW, hp2, 1025); string(p.Data) != "still here" {
		t.Fatalf("other connection got %q", p.Data)
	}
	// A second RESPONSE on a live connection is a protocol error.
	g.send(hdr(vsock.OpResponse, 1025, hp2), nil)
	g.expect(vsock.OpRST, hp2, 1025)
}

// TestCorruptRing: a corrupt available ring puts the device into
// DEVICE_NEEDS_RESET instead of panicking; a driver reset recovers.
func TestCorruptRing(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	c, r := g.hostClient(1024)
	g.recv() // REQUEST
	g.q[1].SetAvailIdx(g.q[1].UsedIdx() + qSize + 5)
	g.drv.Kick(1)
	deadline := time.Now().Add(waitLong)
	for g.tr.Status()&virtio.StatusNeedsReset == 0 {
		if time.Now().After(deadline) {
			t.Fatal("device never asked for a reset")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The driver resets: the pending host client is closed.
	g.drv.Write32(mmio.RegStatus, 0)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if b, err := io.ReadAll(r); err != nil || len(b) != 0 {
		t.Fatalf("host client after reset read %q, %v", b, err)
	}
	g.start()
	c2, _, _ := g.connectFromHost(1024, 4096)
	c2.Write([]byte("y"))
	if p := g.recv(); p.Op != vsock.OpRW || string(p.Data) != "y" {
		t.Fatalf("after reset: %v", p.Header)
	}
}

// TestChainLayouts: header and payload may be spread over buffers, or sit
// in an indirect table.
func TestChainLayouts(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	c, r, hp := g.connectFromHost(1024, 4096)
	h := hdr(vsock.OpRW, 1024, hp)
	h.Len = 4
	e := h.Encode()
	g.sendBufs(virtiotest.Out(e[:7]), virtiotest.Out(e[7:]), virtiotest.Out([]byte("ab")), virtiotest.Out([]byte("cd")))
	h.Len = 2
	e = h.Encode()
	g.q[1].AddIndirect(virtiotest.Out(e[:30]), virtiotest.Out(append(e[30:], "ef"...)))
	g.txOut++
	g.drv.Kick(1)
	buf := make([]byte, 6)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "abcdef" {
		t.Fatalf("host read %q, %v", buf, err)
	}
}
