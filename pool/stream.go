package pool

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
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
func serveStream(ctx context.Context, m *Manager, conn net.Conn, r *bufio.Reader) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	enc := json.NewEncoder(conn)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				enc.Encode(streamAnswer{Status: http.StatusBadRequest, Error: "claim request line too long"})
			}
			return
		}
		req, err := parseClaimRequest(line)
		if err != nil {
			enc.Encode(streamAnswer{Status: http.StatusBadRequest, Error: "malformed claim request: " + err.Error()})
			return
		}
		c, refill, err := m.claim(ctx, req.Profile, ClaimOptions{ID: req.ID, Resume: req.Resume, NoCold: req.NoCold})
		a := streamAnswer{Status: claimStatus(err), Claim: c}
		if err != nil {
			a.Error = err.Error()
		}
		werr := enc.Encode(a)
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

func (s *splitListener) loop() {
	for {
		conn, err := s.Listener.Accept()
		if err != nil {
			s.close(err)
			return
		}
		go s.sort(conn)
	}
}

// sort peeks at a connection's first byte.
func (s *splitListener) sort(conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReaderSize(conn, maxStreamLine)
	first, err := r.Peek(1)
	if err != nil {
		conn.Close()
		return
	}
	conn.SetReadDeadline(time.Time{})
	if first[0] == '{' {
		serveStream(s.ctx, s.m, conn, r)
		return
	}
	select {
	case s.conns <- &peekedConn{Conn: conn, r: r}:
	case <-s.done:
		conn.Close()
	}
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

// errNoStream: the daemon does not speak the claim stream.
var errNoStream = errors.New("pool: the daemon does not speak the claim stream")

// streamConn is a client's claim-stream connection.
type streamConn struct {
	conn net.Conn
	r    *bufio.Reader
	// deadline is the one set on conn (zero: none).
	deadline time.Time
	// spent: a cancelled context set a deadline of its own; the
	// connection is not used again.
	spent bool
}

// claimStream claims over the claim stream, on an idle connection of the
// client's or a new one.
func (c *Client) claimStream(ctx context.Context, req ClaimRequest) (*Claim, error) {
	c.mu.Lock()
	httpOnly := c.httpOnly
	c.mu.Unlock()
	if httpOnly {
		return c.claimHTTP(ctx, req)
	}
	sc, err := c.streamConn(ctx)
	if err != nil {
		return nil, err
	}
	line := append(appendClaimRequest(make([]byte, 0, 128), req), '\n')
	a, err := sc.roundTrip(ctx, line)
	if errors.Is(err, errNoStream) {
		// A daemon from before the claim stream answered with HTTP's
		// 400, having claimed nothing: claim over HTTP from now on.
		sc.conn.Close()
		c.mu.Lock()
		c.httpOnly = true
		c.mu.Unlock()
		return c.claimHTTP(ctx, req)
	}
	if err != nil {
		sc.conn.Close()
		return nil, fmt.Errorf("pool: claim: %w", err)
	}
	c.putStream(sc)
	if a.Status != http.StatusOK {
		return nil, &apiError{msg: a.Error, sentinel: statusErrors[a.Status]}
	}
	if a.Claim == nil {
		return nil, errors.New("pool: claim: the answer has no claim")
	}
	return a.Claim, nil
}

func (sc *streamConn) roundTrip(ctx context.Context, line []byte) (*streamAnswer, error) {
	// Only what changes: each call costs microseconds on a cold claim.
	if dl, _ := ctx.Deadline(); !dl.Equal(sc.deadline) {
		sc.conn.SetDeadline(dl)
		sc.deadline = dl
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { sc.conn.SetDeadline(time.Now()) })
		defer func() {
			if !stop() {
				// ctx ended: its deadline is, or will be, on conn.
				sc.spent = true
			}
		}()
	}
	if _, err := sc.conn.Write(line); err != nil {
		// Nothing was claimed. After this, a failure may come after the
		// daemon claimed a VM (it ends one whose answer it cannot write):
		// that is not ErrUnreachable, which callers take as "try elsewhere".
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, ctxErr(ctx, err))
	}
	resp, err := sc.r.ReadSlice('\n')
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if bytes.HasPrefix(resp, []byte("HTTP/")) {
		return nil, errNoStream
	}
	var a streamAnswer
	if err := json.Unmarshal(resp, &a); err != nil {
		return nil, fmt.Errorf("malformed answer: %w", err)
	}
	return &a, nil
}

// ctxErr prefers ctx's error to the deadline error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		return errors.New("the daemon closed the connection")
	}
	return err
}

// streamConn returns an idle claim-stream connection, or dials one.
func (c *Client) streamConn(ctx context.Context) (*streamConn, error) {
	c.mu.Lock()
	if n := len(c.idle); n > 0 {
		sc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return sc, nil
	}
	c.mu.Unlock()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return &streamConn{conn: conn, r: bufio.NewReaderSize(conn, maxStreamLine)}, nil
}

// maxIdleStreams is how many claim-stream connections a client keeps.
const maxIdleStreams = 64

func (c *Client) putStream(sc *streamConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || sc.spent || len(c.idle) >= maxIdleStreams {
		sc.conn.Close()
		return
	}
	c.idle = append(c.idle, sc)
}
