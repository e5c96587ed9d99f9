package vsock

import (
	"net"
	"time"
)

// connState is where a connection is in its life.
type connState int

const (
	// stateConnecting: host-initiated, REQUEST queued or sent, waiting for
	// the guest's RESPONSE.
	stateConnecting connState = iota
	// stateDialing: guest-initiated, dialing the host's U_P socket.
	stateDialing
	// stateEstablished: bytes flow.
	stateEstablished
)

// maxReadChunk bounds one read from a host socket (and so the bytes a
// connection holds for the guest).
const maxReadChunk = 64 << 10

// conn is one vsock stream connection. Only the muxer's loop touches its
// fields; the reader and writer goroutines see only the host socket and
// their channels.
type conn struct {
	key   connKey
	state connState
	host  *net.UnixConn // nil until dialed (guest-initiated)

	// Our receive side (guest -> host).
	bufAlloc    uint32 // our buffer, advertised
	rxCnt       uint32 // bytes received from the guest
	fwdCnt      uint32 // of those, bytes written to the host socket
	lastFwdSent uint32 // fwd_cnt the guest last heard from us
	wbuf        []byte // received, not yet handed to the writer
	okLine      []byte // "OK <port>\n" not yet handed to the writer
	writeBusy   bool   // the writer holds a chunk
	hostWrClose bool   // CloseWrite done on the host socket

	// Our send side (host -> guest).
	peerBufAlloc uint32
	peerFwdCnt   uint32
	txCnt        uint32 // bytes sent to the guest
	pending      []byte // read from the host, not yet sent
	readBusy     bool   // the reader holds a grant
	hostEOF      bool   // the host socket reached end of stream

	// Control packets owed to the guest.
	needRequest       bool
	needResponse      bool
	needCreditUpdate  bool
	needCreditRequest bool
	creditRequested   bool   // CREDIT_REQUEST sent, no credit since
	shutSent          uint32 // SHUTDOWN flags we sent
	peerShut          uint32 // SHUTDOWN flags the guest sent

	inRxList bool
	timer    *time.Timer // connect timeout (host-initiated)

	// Teardown.
	dead      bool // no longer in the table
	lingering bool // dead, but flushing wbuf to the host first
	closed    bool // host socket closed, goroutines told to stop
	started   bool // reader and writer running
	grants    chan int
	writes    chan chunk
}

// chunk is a buffer for the writer; counted chunks are stream bytes from
// the guest (they advance fwd_cnt), the "OK" line is not.
type chunk struct {
	b       []byte
	counted bool
}

// peerCredit is how many more bytes the guest accepts.
func (c *conn) peerCredit() uint32 { return credit(c.peerBufAlloc, c.peerFwdCnt, c.txCnt) }

// ourFree is how many more bytes we accept from the guest.
func (c *conn) ourFree() uint32 { return credit(c.bufAlloc, c.fwdCnt, c.rxCnt) }

// guestViewFree is our free space as the guest last heard it.
func (c *conn) guestViewFree() uint32 { return credit(c.bufAlloc, c.lastFwdSent, c.rxCnt) }

// checkCreditUpdate decides whether the guest needs to hear about space we
// freed: when its view of our buffer is less than half free.
func (c *conn) checkCreditUpdate() {
	if c.fwdCnt != c.lastFwdSent && c.guestViewFree() < c.bufAlloc/2 {
		c.needCreditUpdate = true
	}
}

// updatePeerCredit records the guest's buffer from any packet it sent.
func (c *conn) updatePeerCredit(h Header) {
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	if c.peerCredit() > 0 {
		c.creditRequested, c.needCreditRequest = false, false
	}
}

// wantsShutdown reports whether a SHUTDOWN(SEND) is owed.
func (c *conn) wantsShutdown() bool {
	return c.state == stateEstablished && c.hostEOF && len(c.pending) == 0 && c.shutSent&ShutdownSend == 0
}

// canSendData reports whether pending bytes may go to the guest now.
func (c *conn) canSendData() bool {
	return len(c.pending) > 0 && c.peerShut&ShutdownRcv == 0 && c.peerCredit() > 0
}

// wantsRx reports whether the connection has a packet for the receive
// queue.
func (c *conn) wantsRx() bool {
	if c.dead {
		return false
	}
	return c.needRequest || c.needResponse || c.needCreditUpdate || c.needCreditRequest ||
		c.canSendData() || c.wantsShutdown()
}

// canGrant reports whether the reader may read another chunk.
func (c *conn) canGrant() bool {
	return c.started && !c.dead && c.state == stateEstablished && !c.readBusy && !c.hostEOF &&
		c.peerShut&ShutdownRcv == 0 && len(c.pending) == 0 && c.peerCredit() > 0
}

// ioEvent is what a connection's reader or writer reports to the loop.
type ioEvent struct {
	c *conn
	// A read: data (possibly empty) and an error (io.EOF at the end).
	read bool
	data []byte
	// A write: n bytes of a counted or uncounted chunk.
	n       int
	counted bool
	err     error
}

// start launches the connection's reader and writer goroutines.
func (c *conn) start(d *Device) {
	c.grants = make(chan int, 1)
	c.writes = make(chan chunk, 1)
	c.started = true
	d.wg.Add(2)
	go c.readLoop(d)
	go c.writeLoop(d)
}

// readLoop reads one chunk per grant and reports it; it ends at the first
// error or when grants is closed.
func (c *conn) readLoop(d *Device) {
	defer d.wg.Done()
	for n := range c.grants {
		buf := make([]byte, n)
		k, err := c.host.Read(buf)
		if !d.post(ioEvent{c: c, read: true, data: buf[:k], err: err}) || err != nil {
			return
		}
	}
}

// writeLoop writes each chunk it is handed and reports it; it ends at the
// first error or when writes is closed.
func (c *conn) writeLoop(d *Device) {
	defer d.wg.Done()
	for ch := range c.writes {
		n, err := c.host.Write(ch.b)
		if !d.post(ioEvent{c: c, n: n, counted: ch.counted, err: err}) || err != nil {
			return
		}
	}
}

// closeHost closes the host socket and stops the goroutines. Those blocked
// in I/O fail with net.ErrClosed; their reports are ignored.
func (c *conn) closeHost() {
	if c.closed {
		return
	}
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.host != nil {
		c.host.Close()
	}
	if c.started {
		close(c.grants)
		close(c.writes)
	}
}
