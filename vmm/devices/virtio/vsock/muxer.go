package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio"
)

const (
	// maxCtrl bounds the standalone packets (RSTs) waiting for receive
	// buffers; while it is reached the transmit queue is not drained, so a
	// guest that sends without receiving stops itself.
	maxCtrl = 256
	// firstHostPort is where the ports of host-initiated connections
	// start.
	firstHostPort = 1 << 30
)

// muxer is the device's state: the connections and the queues. Only the
// loop goroutine (run) touches it.
type muxer struct {
	d   *Device
	log *slog.Logger
	cid uint64

	act    *virtio.Activation // nil until Activate, after Reset
	paused bool
	broken bool // a ring was corrupt; nothing is processed until Reset

	// eventPending: a TRANSPORT_RESET waits for an event buffer.
	eventPending bool
	// resetOnActivate: the next Activate is a restore's.
	resetOnActivate bool

	conns     map[connKey]*conn
	lingering map[*conn]struct{} // torn down, still flushing to the host
	nextPort  uint32
	ctrl      []Header // standalone packets for the guest (RSTs)
	rxList    []*conn  // connections with a packet for the guest, FIFO
}

func newMuxer(d *Device, resetOnActivate bool) *muxer {
	return &muxer{
		d: d, log: d.log, cid: d.cfg.GuestCID, resetOnActivate: resetOnActivate,
		conns: map[connKey]*conn{}, lingering: map[*conn]struct{}{}, nextPort: firstHostPort,
	}
}

// run is the event loop; it returns when the device closes.
func (m *muxer) run() {
	for {
		select {
		case <-m.d.done:
			m.shutdown()
			return
		case c := <-m.d.calls:
			c.f(m)
			close(c.done)
		case <-m.d.kick:
		case ev := <-m.d.events:
			m.handleEvent(ev)
		}
		m.service()
	}
}

// activate starts queue processing.
func (m *muxer) activate(a virtio.Activation) {
	m.act, m.broken = &a, false
	if m.resetOnActivate {
		m.resetOnActivate, m.eventPending = false, true
	}
}

// reset drops every connection (the guest's driver is gone) and the
// queues.
func (m *muxer) reset() {
	for _, c := range m.conns {
		m.teardown(c, false, false)
	}
	m.ctrl, m.rxList = nil, nil
	m.act, m.broken, m.eventPending = nil, false, false
}

// shutdown closes every host socket; the device is closing.
func (m *muxer) shutdown() {
	m.reset()
	for c := range m.lingering {
		c.closeHost()
	}
	clear(m.lingering)
}

// fail stops processing after a corrupt ring.
func (m *muxer) fail(err error) {
	m.broken = true
	m.act.Signal.NeedsReset(err)
}

func (m *muxer) running() bool { return m.act != nil && !m.paused && !m.broken }

// service does whatever the state allows: drains the transmit queue, fills
// receive and event buffers, grants host reads, and interrupts the guest
// if it wants to hear.
func (m *muxer) service() {
	if m.running() {
		for {
			stalled := m.processTx()
			m.fillRx()
			if !stalled || len(m.ctrl) >= maxCtrl || !m.running() {
				break
			}
		}
	}
	if m.running() {
		m.fillEvents()
	}
	m.grantReads()
	if m.running() {
		m.signal()
	}
}

// signal raises the used-buffer interrupt if a queue needs it.
func (m *muxer) signal() {
	need := false
	for _, q := range m.act.Queues {
		if q.NeedsNotification() {
			need = true
		}
	}
	if need {
		if err := m.act.Signal.UsedBuffer(); err != nil {
			m.log.Warn("raising vsock interrupt", "err", err)
		}
	}
}

// schedule puts c on the receive list if it has a packet for the guest.
func (m *muxer) schedule(c *conn) {
	if !c.inRxList && c.wantsRx() {
		c.inRxList = true
		m.rxList = append(m.rxList, c)
	}
}

// replyRST answers a guest packet with RST (never an RST with an RST).
func (m *muxer) replyRST(h Header) {
	if h.Op == OpRST {
		return
	}
	m.ctrl = append(m.ctrl, Header{
		SrcCID: h.DstCID, DstCID: h.SrcCID, SrcPort: h.DstPort, DstPort: h.SrcPort,
		Type: TypeStream, Op: OpRST,
	})
}

// teardown removes c from the table. rst sends the guest an RST; flush
// writes what the guest sent before closing the host socket (bounded by
// ConnectTimeout).
func (m *muxer) teardown(c *conn, rst, flush bool) {
	if c.dead {
		return
	}
	c.dead = true
	delete(m.conns, c.key)
	if c.timer != nil {
		c.timer.Stop()
	}
	c.pending = nil
	if rst {
		r := rstFor(c.key)
		r.SrcCID, r.DstCID = HostCID, m.cid
		m.ctrl = append(m.ctrl, r)
	}
	if flush && c.started && !c.closed && (len(c.wbuf) > 0 || c.writeBusy || c.okLine != nil) {
		c.lingering = true
		m.lingering[c] = struct{}{}
		c.host.SetWriteDeadline(time.Now().Add(m.d.cfg.ConnectTimeout))
		m.pumpWrites(c)
		return
	}
	c.closeHost()
}

// handleEvent applies something that happened on the host side.
func (m *muxer) handleEvent(ev any) {
	switch ev := ev.(type) {
	case hostConnect:
		m.hostConnect(ev)
	case dialed:
		m.dialed(ev)
	case connectTimeout:
		c := ev.c
		if !c.dead && c.state == stateConnecting {
			m.log.Debug("guest did not answer vsock connect", "port", c.key.peer)
			m.teardown(c, !c.needRequest, false)
		}
	case ioEvent:
		m.handleIO(ev)
	}
}

// hostConnect starts a host-initiated connection: REQUEST to the guest.
func (m *muxer) hostConnect(ev hostConnect) {
	if len(m.conns) >= m.d.cfg.MaxConns {
		m.log.Warn("too many vsock connections; refusing host client", "max", m.d.cfg.MaxConns)
		ev.host.Close()
		return
	}
	var key connKey
	for {
		key = connKey{local: m.nextPort, peer: ev.port}
		m.nextPort++
		if m.nextPort < firstHostPort {
			m.nextPort = firstHostPort
		}
		if _, used := m.conns[key]; !used {
			break
		}
	}
	c := &conn{key: key, state: stateConnecting, host: ev.host, bufAlloc: m.d.cfg.BufAlloc, needRequest: true}
	m.conns[key] = c
	d := m.d
	c.timer = time.AfterFunc(d.cfg.ConnectTimeout, func() { d.post(connectTimeout{c}) })
	m.schedule(c)
}

// dialed completes (or fails) a guest-initiated connection.
func (m *muxer) dialed(ev dialed) {
	c := ev.c
	if c.dead {
		if ev.host != nil {
			ev.host.Close()
		}
		return
	}
	if ev.err != nil {
		m.log.Debug("guest vsock connect: host socket not reachable", "port", c.key.local, "err", ev.err)
		m.teardown(c, true, false)
		return
	}
	c.host, c.state, c.needResponse = ev.host, stateEstablished, true
	c.start(m.d)
	m.schedule(c)
}

// handleIO applies a host socket read or write.
func (m *muxer) handleIO(ev ioEvent) {
	c := ev.c
	if c.closed {
		return
	}
	if ev.read {
		c.readBusy = false
		if c.dead {
			return
		}
		if len(ev.data) > 0 && c.peerShut&ShutdownRcv == 0 {
			c.pending = append(c.pending, ev.data...)
		}
		if ev.err != nil {
			if !errors.Is(ev.err, io.EOF) {
				m.log.Debug("reading host vsock socket", "port", c.key.local, "err", ev.err)
				m.teardown(c, true, false)
				return
			}
			c.hostEOF = true
		}
		m.schedule(c)
		return
	}
	c.writeBusy = false
	if ev.err != nil {
		m.log.Debug("writing host vsock socket", "port", c.key.local, "err", ev.err)
		if c.lingering {
			m.closeLingering(c)
			return
		}
		m.teardown(c, true, false)
		return
	}
	if ev.counted {
		c.fwdCnt += uint32(ev.n)
		c.checkCreditUpdate()
	}
	m.pumpWrites(c)
	m.schedule(c)
}

func (m *muxer) closeLingering(c *conn) {
	delete(m.lingering, c)
	c.closeHost()
}

// pumpWrites hands the writer its next chunk; once everything is written
// it half-closes the host socket if the guest shut down sending, and ends
// the connection when both directions are done.
func (m *muxer) pumpWrites(c *conn) {
	if c.closed || !c.started || c.writeBusy {
		return
	}
	switch {
	case c.okLine != nil:
		c.writes <- chunk{b: c.okLine}
		c.okLine, c.writeBusy = nil, true
		return
	case len(c.wbuf) > 0:
		c.writes <- chunk{b: c.wbuf, counted: true}
		c.wbuf, c.writeBusy = nil, true
		return
	}
	if c.lingering {
		m.closeLingering(c)
		return
	}
	if c.dead {
		return
	}
	if c.peerShut&ShutdownSend != 0 && !c.hostWrClose {
		c.hostWrClose = true
		if err := c.host.CloseWrite(); err != nil {
			m.log.Debug("half-closing host vsock socket", "port", c.key.local, "err", err)
		}
	}
	// Both directions finished: the guest's close waits for our RST.
	if c.peerShut&ShutdownSend != 0 && (c.peerShut&ShutdownRcv != 0 || c.shutSent&ShutdownSend != 0) {
		m.teardown(c, true, false)
	}
}

// grantReads lets each connection whose guest has credit read its next
// chunk from the host, and asks for credit where it ran out.
func (m *muxer) grantReads() {
	for _, c := range m.conns {
		if c.canGrant() {
			c.readBusy = true
			c.grants <- int(min(c.peerCredit(), maxReadChunk))
			continue
		}
		if c.state == stateEstablished && c.peerShut&ShutdownRcv == 0 && !c.creditRequested &&
			c.peerCredit() == 0 && (len(c.pending) > 0 || !c.hostEOF) {
			c.creditRequested, c.needCreditRequest = true, true
			m.schedule(c)
		}
	}
}

// processTx drains the transmit queue. It reports true if it stopped
// because too many replies wait for receive buffers.
func (m *muxer) processTx() bool {
	q := m.act.Queues[txQueue]
	for {
		q.DisableNotification()
		for {
			if len(m.ctrl) >= maxCtrl {
				if _, err := q.EnableNotification(); err != nil {
					m.fail(err)
					return false
				}
				return true
			}
			ch, err := q.Pop()
			if err != nil {
				m.fail(err)
				return false
			}
			if ch == nil {
				break
			}
			m.handleTx(ch)
			if err := q.AddUsed(ch.Head, 0); err != nil {
				m.fail(err)
				return false
			}
		}
		more, err := q.EnableNotification()
		if err != nil {
			m.fail(err)
			return false
		}
		if !more {
			return false
		}
	}
}

// handleTx processes one packet from the guest.
func (m *muxer) handleTx(ch *virtio.Chain) {
	r := ch.Reader()
	var hb [HeaderSize]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		m.log.Debug("dropping vsock packet shorter than its header", "len", len(ch.Readable()))
		return
	}
	h, _ := DecodeHeader(hb[:])
	if h.SrcCID != m.cid {
		m.log.Debug("dropping vsock packet with a foreign source CID", "hdr", h)
		return
	}
	key := connKey{local: h.DstPort, peer: h.SrcPort}
	c := m.conns[key]
	if err := m.checkPacket(h, r.Len()); err != nil {
		m.log.Debug("resetting on malformed vsock packet", "hdr", h, "err", err)
		m.replyRST(h)
		if c != nil && h.DstCID == HostCID {
			m.teardown(c, false, false)
		}
		return
	}
	if c == nil {
		switch h.Op {
		case OpRequest:
			m.guestConnect(h, key)
		case OpRST:
		default:
			m.replyRST(h)
		}
		return
	}
	c.updatePeerCredit(h)
	switch h.Op {
	case OpRequest:
		m.teardown(c, true, false)
	case OpResponse:
		if c.state != stateConnecting || c.needRequest {
			m.teardown(c, true, false)
			return
		}
		c.state = stateEstablished
		c.timer.Stop()
		c.okLine = fmt.Appendf(nil, "OK %d\n", c.key.local)
		c.start(m.d)
		m.pumpWrites(c)
	case OpRST:
		m.teardown(c, false, true)
	case OpShutdown:
		if c.state != stateEstablished {
			m.teardown(c, true, false)
			return
		}
		c.peerShut |= h.Flags & shutdownBoth
		if c.peerShut&ShutdownRcv != 0 {
			c.pending = nil
		}
		m.pumpWrites(c)
	case OpRW:
		if c.state != stateEstablished || c.peerShut&ShutdownSend != 0 {
			m.teardown(c, true, false)
			return
		}
		if h.Len > c.ourFree() {
			m.log.Debug("guest overran vsock credit; resetting", "hdr", h, "free", c.ourFree())
			m.teardown(c, true, false)
			return
		}
		n := len(c.wbuf)
		c.wbuf = slices.Grow(c.wbuf, int(h.Len))[:n+int(h.Len)]
		if _, err := io.ReadFull(r, c.wbuf[n:]); err != nil {
			// checkPacket saw the bytes; guest memory cannot vanish.
			m.log.Warn("reading vsock payload", "err", err)
			m.teardown(c, true, false)
			return
		}
		c.rxCnt += h.Len
		m.pumpWrites(c)
	case OpCreditUpdate:
	case OpCreditRequest:
		c.needCreditUpdate = true
	}
	m.schedule(c)
}

// Reasons checkPacket refuses a packet.
var (
	errDstCID  = errors.New("destination is not the host")
	errType    = errors.New("socket type is not stream")
	errOp      = errors.New("unknown operation")
	errLenLong = errors.New("len beyond the buffers")
)

// checkPacket validates a header whose source is the guest; avail is the
// number of readable bytes after the header.
func (m *muxer) checkPacket(h Header, avail uint64) error {
	switch {
	case h.DstCID != HostCID:
		return errDstCID
	case h.Type != TypeStream:
		return errType
	case !h.Op.valid():
		return errOp
	case uint64(h.Len) > avail:
		return fmt.Errorf("%w: %d > %d", errLenLong, h.Len, avail)
	}
	return nil
}

// guestConnect starts a guest-initiated connection: dial U_P.
func (m *muxer) guestConnect(h Header, key connKey) {
	if len(m.conns) >= m.d.cfg.MaxConns {
		m.log.Warn("too many vsock connections; refusing guest connect", "max", m.d.cfg.MaxConns)
		m.replyRST(h)
		return
	}
	c := &conn{
		key: key, state: stateDialing, bufAlloc: m.d.cfg.BufAlloc,
		peerBufAlloc: h.BufAlloc, peerFwdCnt: h.FwdCnt,
	}
	m.conns[key] = c
	m.d.dial(c)
}

// hasRx reports whether a packet waits for a receive buffer.
func (m *muxer) hasRx() bool {
	if len(m.ctrl) > 0 {
		return true
	}
	for len(m.rxList) > 0 && !m.rxList[0].wantsRx() {
		m.rxList[0].inRxList = false
		m.rxList = m.rxList[1:]
	}
	return len(m.rxList) > 0
}

// fillRx puts waiting packets into receive buffers, one per buffer.
func (m *muxer) fillRx() {
	q := m.act.Queues[rxQueue]
	for m.hasRx() {
		ch, err := q.Pop()
		if err != nil {
			m.fail(err)
			return
		}
		if ch == nil {
			// Out of buffers: ask for a notification when more come.
			more, err := q.EnableNotification()
			if err != nil {
				m.fail(err)
				return
			}
			if !more {
				return
			}
			continue
		}
		w := ch.Writer()
		var n uint32
		if w.Len() < HeaderSize {
			m.log.Debug("vsock receive buffer smaller than a header", "len", w.Len())
		} else {
			m.writeRx(w)
			n = w.Written()
		}
		if err := q.AddUsed(ch.Head, n); err != nil {
			m.fail(err)
			return
		}
	}
}

// writeRx writes the next packet into w, which holds at least a header.
func (m *muxer) writeRx(w *virtio.Writer) {
	if len(m.ctrl) > 0 {
		h := m.ctrl[0]
		m.ctrl = m.ctrl[1:]
		if len(m.ctrl) == 0 {
			m.ctrl = nil
		}
		writePacket(w, h, nil)
		return
	}
	c := m.rxList[0]
	m.rxList = m.rxList[1:]
	c.inRxList = false
	h := Header{
		SrcCID: HostCID, DstCID: m.cid, SrcPort: c.key.local, DstPort: c.key.peer,
		Type: TypeStream, BufAlloc: c.bufAlloc, FwdCnt: c.fwdCnt,
	}
	room := uint32(min(w.Len()-HeaderSize, 1<<31))
	var payload []byte
	switch {
	case c.needRequest:
		h.Op, c.needRequest = OpRequest, false
	case c.needResponse:
		h.Op, c.needResponse = OpResponse, false
	case c.canSendData() && room > 0:
		n := min(uint32(len(c.pending)), room, c.peerCredit())
		h.Op, h.Len = OpRW, n
		payload, c.pending = c.pending[:n], c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		c.txCnt += n
	case c.wantsShutdown():
		h.Op, h.Flags = OpShutdown, ShutdownSend
		c.shutSent |= ShutdownSend
	case c.needCreditRequest:
		h.Op, c.needCreditRequest = OpCreditRequest, false
	default:
		h.Op = OpCreditUpdate
	}
	c.lastFwdSent, c.needCreditUpdate = c.fwdCnt, false
	writePacket(w, h, payload)
	if h.Op == OpShutdown {
		m.pumpWrites(c) // may finish the connection
	}
	m.schedule(c)
}

// writePacket writes a header and its payload into a receive buffer that
// has room for both.
func writePacket(w *virtio.Writer, h Header, payload []byte) {
	var hb [HeaderSize]byte
	h.put(hb[:])
	// The chain was validated and sized; guest memory cannot fail here.
	w.Write(hb[:])
	w.Write(payload)
}

// fillEvents delivers a pending TRANSPORT_RESET.
func (m *muxer) fillEvents() {
	q := m.act.Queues[eventQueue]
	for m.eventPending {
		ch, err := q.Pop()
		if err != nil {
			m.fail(err)
			return
		}
		if ch == nil {
			more, err := q.EnableNotification()
			if err != nil {
				m.fail(err)
				return
			}
			if !more {
				return
			}
			continue
		}
		w := ch.Writer()
		var n uint32
		if w.Len() >= EventSize {
			var b [EventSize]byte
			binary.LittleEndian.PutUint32(b[:], EventTransportReset)
			w.Write(b[:])
			n, m.eventPending = EventSize, false
		}
		if err := q.AddUsed(ch.Head, n); err != nil {
			m.fail(err)
			return
		}
	}
}
