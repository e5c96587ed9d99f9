package vsock_test

import (
	"bytes"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio/vsock"
)

func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestLargeTransfer moves several MiB each way at once over one
// connection, with a small guest buffer, and checks that both streams
// arrive byte-exact and that the device never exceeds the guest's credit.
func TestLargeTransfer(t *testing.T) {
	const (
		size     = 4 << 20
		guestBuf = 64 << 10
		chunk    = 4096
	)
	g := newGuest(t, func(c *vsock.Config) { c.BufAlloc = 128 << 10 })
	g.start()
	c, r, hp := g.connectFromHost(1024, guestBuf)
	toGuest, toHost := pattern(1, size), pattern(2, size)

	var wg sync.WaitGroup
	var hostGot []byte
	var readErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, err := c.Write(toGuest)
		if err != nil {
			t.Errorf("host write: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		// A slow-ish reader: small reads.
		buf := make([]byte, 1500)
		for len(hostGot) < size {
			n, err := r.Read(buf)
			hostGot = append(hostGot, buf[:n]...)
			if err != nil {
				readErr = err
				return
			}
		}
	}()

	var (
		got         []byte
		fwdSent     uint32 // fwd_cnt the device last heard
		sent        uint32
		devBufAlloc uint32
		devFwdCnt   uint32
		maxInFlight uint32
		forceUpdate bool
	)
	deadline := time.Now().Add(15 * time.Second)
	for len(got) < size || int(sent) < size {
		if time.Now().After(deadline) {
			t.Fatalf("stuck: guest got %d, sent %d (device credit %d/%d)", len(got), sent, devBufAlloc, devFwdCnt)
		}
		g.poll()
		for _, p := range g.inbox {
			if p.SrcPort != hp || p.DstPort != 1024 {
				t.Fatalf("packet for another connection: %v", p.Header)
			}
			devBufAlloc, devFwdCnt = p.BufAlloc, p.FwdCnt
			switch p.Op {
			case vsock.OpRW:
				got = append(got, p.Data...)
				if inFlight := uint32(len(got)) - fwdSent; inFlight > guestBuf {
					t.Fatalf("device sent %d bytes beyond fwd_cnt %d, buffer %d", inFlight, fwdSent, guestBuf)
				} else {
					maxInFlight = max(maxInFlight, inFlight)
				}
			case vsock.OpCreditUpdate:
			case vsock.OpCreditRequest:
				forceUpdate = true
			default:
				t.Fatalf("unexpected %v", p.Header)
			}
		}
		g.inbox = nil
		// Consume everything; tell the device when half the buffer was
		// consumed since the last update (as Linux does).
		if uint32(len(got))-fwdSent >= guestBuf/2 || forceUpdate {
			forceUpdate = false
			h := hdr(vsock.OpCreditUpdate, 1024, hp)
			h.BufAlloc, h.FwdCnt = guestBuf, uint32(len(got))
			g.send(h, nil)
			fwdSent = uint32(len(got))
		}
		progressed := false
		for int(sent) < size {
			credit := devBufAlloc - (sent - devFwdCnt)
			if devBufAlloc == 0 || credit == 0 || credit > devBufAlloc {
				break
			}
			n := min(uint32(chunk), credit, uint32(size)-sent)
			h := hdr(vsock.OpRW, 1024, hp)
			h.Len, h.BufAlloc, h.FwdCnt = n, guestBuf, fwdSent
			g.send(h, toHost[sent:sent+n])
			sent += n
			progressed = true
		}
		if !progressed && len(g.inbox) == 0 {
			g.wait(100 * time.Millisecond)
		}
	}
	wg.Wait()
	if readErr != nil {
		t.Fatalf("host read: %v", readErr)
	}
	if !bytes.Equal(got, toGuest) {
		t.Errorf("guest received %d bytes that differ from what the host sent", len(got))
	}
	if !bytes.Equal(hostGot, toHost) {
		t.Errorf("host received %d bytes that differ from what the guest sent", len(hostGot))
	}
	t.Logf("max bytes in flight to the guest: %d of %d", maxInFlight, guestBuf)
}

// TestCreditLimit checks that the device stops at the guest's buffer,
// asks for credit, and continues after a CREDIT_UPDATE.
func TestCreditLimit(t *testing.T) {
	const guestBuf = 16 << 10
	g := newGuest(t, nil)
	g.start()
	c, _, hp := g.connectFromHost(1024, guestBuf)
	data := pattern(3, 64<<10)
	go c.Write(data)

	var got []byte
	for len(got) < guestBuf {
		p := g.recv()
		if p.Op != vsock.OpRW {
			t.Fatalf("got %v before the credit ran out", p.Header)
		}
		got = append(got, p.Data...)
	}
	if len(got) != guestBuf {
		t.Fatalf("device sent %d bytes into a %d-byte buffer", len(got), guestBuf)
	}
	if p := g.recv(); p.Op != vsock.OpCreditRequest {
		t.Fatalf("got %v, want CREDIT_REQUEST", p.Header)
	}
	g.expectQuiet(100 * time.Millisecond)
	for len(got) < len(data) {
		h := hdr(vsock.OpCreditUpdate, 1024, hp)
		h.BufAlloc, h.FwdCnt = guestBuf, uint32(len(got))
		g.send(h, nil)
		for target := len(got) + guestBuf; len(got) < min(target, len(data)); {
			p := g.recv()
			if p.Op == vsock.OpCreditRequest {
				continue
			}
			if p.Op != vsock.OpRW {
				t.Fatalf("got %v", p.Header)
			}
			got = append(got, p.Data...)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("stream corrupted")
	}
}

// TestDeviceCreditUpdate checks that the device tells the guest about
// space it freed once the guest's view falls below half.
func TestDeviceCreditUpdate(t *testing.T) {
	g := newGuest(t, func(c *vsock.Config) { c.BufAlloc = 8 << 10 })
	g.start()
	ln := g.listenPort(60)
	g.send(hdr(vsock.OpRequest, 5000, 60), nil)
	hc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	g.expect(vsock.OpResponse, 60, 5000)
	for _, n := range []uint32{4096, 1024} {
		h := hdr(vsock.OpRW, 5000, 60)
		h.Len = n
		g.send(h, make([]byte, n))
	}
	if _, err := io.ReadFull(hc, make([]byte, 5120)); err != nil {
		t.Fatal(err)
	}
	// The guest's view (5120 of 8192 used) fell below half free: the
	// device must say how much it forwarded, enough to lift the view back
	// above half.
	p := g.expect(vsock.OpCreditUpdate, 60, 5000)
	if p.BufAlloc != 8<<10 || p.FwdCnt < 1024 || p.FwdCnt > 5120 {
		t.Fatalf("credit update %v", p.Header)
	}
	// A CREDIT_REQUEST is answered at once, with everything forwarded
	// (the last write's completion may trail the host's read a little).
	for i := 0; ; i++ {
		g.send(hdr(vsock.OpCreditRequest, 5000, 60), nil)
		p := g.expect(vsock.OpCreditUpdate, 60, 5000)
		if p.FwdCnt == 5120 {
			break
		}
		if i == 10 {
			t.Fatalf("credit update %v, want fwd_cnt 5120", p.Header)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCreditOverrun: a guest that sends more than the device's buffer
// loses its connection.
func TestCreditOverrun(t *testing.T) {
	g := newGuest(t, func(c *vsock.Config) { c.BufAlloc = 4096 })
	g.start()
	c, r, hp := g.connectFromHost(1024, 64<<10)
	h := hdr(vsock.OpRW, 1024, hp)
	h.Len = 4097
	g.send(h, make([]byte, 4097))
	g.expect(vsock.OpRST, hp, 1024)
	c.SetReadDeadline(time.Now().Add(waitLong))
	if b, err := io.ReadAll(r); err != nil || len(b) != 0 {
		t.Fatalf("host read %d bytes, %v; want EOF", len(b), err)
	}
}

// TestBackPressure: without receive buffers the device holds the data and
// stops reading the host socket; nothing is lost when buffers return.
func TestBackPressure(t *testing.T) {
	const size = 4 << 20
	g := newGuest(t, nil)
	g.noRefill = true
	g.start()
	c, _, hp := g.connectFromHost(1024, 1<<30)
	data := pattern(4, size)
	var written atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for off := 0; off < size; off += 64 << 10 {
			n, err := c.Write(data[off : off+64<<10])
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	var got []byte
	for range rxPosted - 1 { // the REQUEST took one buffer
		p := g.recv()
		got = append(got, p.Data...)
	}
	g.expectQuiet(200 * time.Millisecond)
	select {
	case <-done:
		t.Fatalf("host wrote all %d bytes while the guest gave no buffers", size)
	default:
	}
	t.Logf("held: guest has %d bytes, host wrote %d", len(got), written.Load())
	g.noRefill = false
	for range rxPosted {
		g.postRx()
	}
	g.drv.Kick(0)
	for len(got) < size {
		p := g.recv()
		if p.Op != vsock.OpRW || p.SrcPort != hp {
			t.Fatalf("got %v", p.Header)
		}
		got = append(got, p.Data...)
		if len(got)%(256<<10) < 4096 { // keep the credit open
			h := hdr(vsock.OpCreditUpdate, 1024, hp)
			h.BufAlloc, h.FwdCnt = 1<<30, uint32(len(got))
			g.send(h, nil)
		}
	}
	<-done
	if !bytes.Equal(got, data) {
		t.Fatal("stream corrupted")
	}
}
