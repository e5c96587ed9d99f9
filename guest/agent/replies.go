package agent

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ttrpc's Server.Shutdown closes the connections it sees as idle, but a
// connection's state is only refreshed when its loop wakes up, so a
// connection whose request (Shutdown itself, typically) was answered a
// moment ago can be closed with the response still queued: the client then
// gets "ttrpc: closed" instead of the reply. replies counts the calls
// answered and the response frames written, so that Serve can wait for
// every reply to be on the wire before it closes anything.
type replies struct {
	inflight atomic.Int64 // calls in the interceptor
	answered atomic.Int64 // calls that returned a response or an error
	written  atomic.Int64 // ttrpc frames written to the connections
}

func (r *replies) begin() { r.inflight.Add(1) }

func (r *replies) end() {
	r.answered.Add(1)
	r.inflight.Add(-1)
}

// settled reports whether no call is running and every answer was
// written. (Frames the server writes without a call, such as an error for
// an unknown method, only make the count run ahead.)
func (r *replies) settled() bool {
	return r.inflight.Load() == 0 && r.written.Load() >= r.answered.Load()
}

// wait waits until settled or the timeout passed.
func (r *replies) wait(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !r.settled() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// countingListener wraps each accepted connection in a frameCounter.
type countingListener struct {
	net.Listener
	r *replies
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &frameCounter{Conn: c, r: l.r}, nil
}

// frameHeaderLen is ttrpc's frame header: length (4), stream id (4), type
// (1), flags (1).
const frameHeaderLen = 10

// frameCounter counts the complete ttrpc frames written to a connection.
type frameCounter struct {
	net.Conn
	r *replies

	mu   sync.Mutex
	hdr  [frameHeaderLen]byte
	nhdr int
	body uint32 // payload bytes of the current frame still to come
}

func (c *frameCounter) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.scan(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *frameCounter) scan(b []byte) {
	for len(b) > 0 {
		if c.body > 0 {
			k := min(uint32(len(b)), c.body)
			c.body -= k
			b = b[k:]
			if c.body == 0 {
				c.r.written.Add(1)
			}
			continue
		}
		k := copy(c.hdr[c.nhdr:], b)
		c.nhdr += k
		b = b[k:]
		if c.nhdr == frameHeaderLen {
			c.nhdr = 0
			if c.body = binary.BigEndian.Uint32(c.hdr[:4]); c.body == 0 {
				c.r.written.Add(1)
			}
		}
	}
}
