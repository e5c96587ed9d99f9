package pool

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The claim stream: a lean protocol beside HTTP on the pool's socket, for
// the claim's latency. A connection whose first byte is '{' speaks it:
// one JSON ClaimRequest per line, each answered by one JSON streamAnswer
// line, for as long as the client keeps the connection. (HTTP through
// net/http costs a claim a few hundred microseconds more on small hosts:
// request parsing, and the client transport's goroutine hand-overs.) Any
// other connection is HTTP (Handler).

// streamAnswer is the answer to one ClaimRequest on the claim stream.
type streamAnswer struct {
	// Status is the HTTP status POST /claim would have answered.
	Status int    `json:"status"`
	Claim  *Claim `json:"claim,omitempty"`
	Error  string `json:"error,omitempty"`
}

// maxStreamLine bounds a line of the claim stream (a request, an answer:
// a few hundred bytes). It is also the size of each connection's read
// buffer, on both sides, made anew for every connection of a claimer
// that dials per claim (the shim).
const maxStreamLine = 8 << 10

// claimStatus maps a Claim error to the status of its answer.
func claimStatus(err error) int {
	switch {
	case err == nil:
		return http.StatusOK
	case errors.Is(err, ErrUnknownProfile):
		return http.StatusNotFound
	case errors.Is(err, ErrEmpty):
		return http.StatusConflict
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// serveStream answers claims on one claim-stream connection until the
// client closes it or ctx is done.
//
// next is called once, as soon as the first claim is on its way to a VMM
// (or the connection ends before that).
func serveStream(ctx context.Context, m *Manager, conn net.Conn, r *bufio.Reader, next func()) {
	defer next()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var out []byte
	write := func(a streamAnswer) error {
		b, err := appendStreamAnswer(out[:0], a)
		if err != nil {
			return err
		}
		out = append(b, '\n')
		_, err = conn.Write(out)
		return err
	}
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				write(streamAnswer{Status: http.StatusBadRequest, Error: "claim request line too long"})
			}
			return
		}
		req, err := parseClaimRequest(line)
		if err != nil {
			write(streamAnswer{Status: http.StatusBadRequest, Error: "malformed claim request: " + err.Error()})
			return
		}
		c, refill, err := m.claim(ctx, req.Profile, ClaimOptions{ID: req.ID, Resume: req.Resume, NoCold: req.NoCold, sent: next})
		next()
		a := streamAnswer{Status: claimStatus(err), Claim: c}
		if err != nil {
			a.Error = err.Error()
		}
		werr := write(a)
		refill()
		if werr != nil {
			if c != nil {
				// The claimer hung up: nobody would ever own this VMM.
				m.abandon(c)
			}
			return
		}
	}
}

// strictUnmarshal decodes one JSON value, refusing unknown fields.
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// splitListener accepts connections on l and sorts them: claim-stream
// connections are served at once, the others are handed to an HTTP server
// through Accept.
type splitListener struct {
	net.Listener
	ctx   context.Context
	m     *Manager
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error // why it stopped accepting; set before done is closed
}

func newSplitListener(ctx context.Context, l net.Listener, m *Manager) *splitListener {
	s := &splitListener{Listener: l, ctx: ctx, m: m, conns: make(chan net.Conn), done: make(chan struct{})}
	go s.loop()
	return s
}

// loop accepts one connection and serves it; another loop accepts the
// next. That one is started only once the connection's first claim is on
// its way to its VMM: this goroutine is running when Accept returns, and
// starting another one here would cost a claimer that dials per claim (the
// shim) the wake-up of a second thread (tens of microseconds on small
// hosts). Connections that arrive meanwhile wait in the listen backlog.
func (s *splitListener) loop() {
	conn, err := s.Listener.Accept()
	if err != nil {
		s.close(err)
		return
	}
	s.sort(conn, sync.OnceFunc(func() { go s.loop() }))
}

// sort reads a connection's first byte and serves it as a claim stream
// or hands it to the HTTP server. next starts the next accept.
func (s *splitListener) sort(conn net.Conn, next func()) {
	r := bufio.NewReaderSize(conn, maxStreamLine)
	first, line, ok := peekReady(conn)
	if !ok || !line {
		// The client has not written (all of its first line) yet: do not
		// hold up other connections meanwhile.
		next()
	}
	if !ok {
		// Wait, but not forever.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := r.Peek(1)
		if err != nil {
			conn.Close()
			return
		}
		conn.SetReadDeadline(time.Time{})
		first = b[0]
	}
	if first == '{' {
		serveStream(s.ctx, s.m, conn, r, next)
		return
	}
	next()
	select {
	case s.conns <- &peekedConn{Conn: conn, r: r}:
	case <-s.done:
		conn.Close()
	}
}

// peekReady returns the first byte of conn if it has arrived, and whether
// a whole line has, without waiting and without consuming anything. (A
// client that dials per claim has written its claim by the time the
// daemon accepts: the deadline a wait needs costs a claim microseconds.)
func peekReady(conn net.Conn) (first byte, line, ok bool) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return 0, false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false, false
	}
	b := make([]byte, maxStreamLine)
	n := 0
	rc.Read(func(fd uintptr) bool {
		n, _, err = unix.Recvfrom(int(fd), b, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true
	})
	if err != nil || n == 0 {
		return 0, false, false
	}
	return b[0], bytes.IndexByte(b[:n], '\n') >= 0, true
}

// Accept returns the next HTTP connection.
func (s *splitListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		if s.err != nil {
			return nil, s.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting.
func (s *splitListener) Close() error { return s.close(nil) }

// close stops accepting, for why (nil: Close). Accept reports why once
// done is closed.
func (s *splitListener) close(why error) error {
	var err error
	s.once.Do(func() {
		s.err = why
		close(s.done)
		err = s.Listener.Close()
	})
	return err
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }
