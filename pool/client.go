package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
)

// Client talks to a pool daemon: claims over the claim stream, the rest
// over HTTP. It is safe for concurrent use.
type Client struct {
	path  string
	ready string // ReadyDir(path)
	http  *http.Client

	mu       sync.Mutex
	idle     []*sockConn
	closed   bool
	httpOnly bool // the daemon predates the claim stream
}

// NewClient returns a client for the pool socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, ready: ReadyDir(path), http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		// Keep a connection per concurrent claim (the default keeps 2),
		// so that a client claiming in bursts does not connect anew.
		MaxIdleConnsPerHost: 64,
	}}}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://pool"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		json.NewDecoder(resp.Body).Decode(&eb)
		if eb.Error == "" {
			eb.Error = fmt.Sprintf("pool: %s %s: %s", method, path, resp.Status)
		}
		return &apiError{msg: eb.Error, sentinel: statusErrors[resp.StatusCode]}
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("pool: %s %s: malformed answer: %w", method, path, err)
	}
	return nil
}

// statusErrors are the sentinels behind the API's error statuses.
var statusErrors = map[int]error{
	http.StatusNotFound:           ErrUnknownProfile,
	http.StatusConflict:           ErrEmpty,
	http.StatusServiceUnavailable: ErrClosed,
	http.StatusBadRequest:         ErrBadRequest,
}

// apiError is the daemon's error answer; errors.Is finds its sentinel.
type apiError struct {
	msg      string
	sentinel error
}

func (e *apiError) Error() string { return e.msg }
func (e *apiError) Unwrap() error { return e.sentinel }

// Claim claims a VM: a ready one directly, from the daemon's ready
// directory (ReadyDir), if it lists one; otherwise through the daemon,
// which also starts one cold when none is ready. Errors wrap
// ErrUnreachable (no daemon), or ErrUnknownProfile, ErrEmpty (NoCold),
// ErrClosed and ErrBadRequest from the daemon.
func (c *Client) Claim(ctx context.Context, req ClaimRequest) (*Claim, error) {
	if cl, err := c.claimDirect(ctx, req); !errors.Is(err, errNoDirect) {
		return cl, err
	}
	return c.claimStream(ctx, req)
}

// claimHTTP claims with POST /claim.
func (c *Client) claimHTTP(ctx context.Context, req ClaimRequest) (*Claim, error) {
	var cl Claim
	if err := c.do(ctx, http.MethodPost, "/claim", req, &cl); err != nil {
		return nil, err
	}
	return &cl, nil
}

// Close closes the client's idle connections.
func (c *Client) Close() error {
	c.mu.Lock()
	idle := c.idle
	c.idle, c.closed = nil, true
	c.mu.Unlock()
	for _, sc := range idle {
		sc.Close()
	}
	c.http.CloseIdleConnections()
	return nil
}

// Status fetches the pool's counts.
func (c *Client) Status(ctx context.Context) ([]ProfileStatus, error) {
	var st []ProfileStatus
	return st, c.do(ctx, http.MethodGet, "/status", nil, &st)
}
