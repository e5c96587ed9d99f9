package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// The client's side of the claim stream (stream.go).

// errNoStream: the daemon does not speak the claim stream.
var errNoStream = errors.New("pool: the daemon does not speak the claim stream")

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
		sc.Close()
		c.mu.Lock()
		c.httpOnly = true
		c.mu.Unlock()
		return c.claimHTTP(ctx, req)
	}
	if err != nil {
		sc.Close()
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

// ctxErr prefers ctx's error to the error its end caused.
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
func (c *Client) streamConn(ctx context.Context) (*sockConn, error) {
	c.mu.Lock()
	if n := len(c.idle); n > 0 {
		sc := c.idle[n-1]
		c.idle = c.idle[:n-1]
		c.mu.Unlock()
		return sc, nil
	}
	c.mu.Unlock()
	sc, err := dialSock(ctx, c.path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return sc, nil
}

// maxIdleStreams is how many claim-stream connections a client keeps.
const maxIdleStreams = 64

func (c *Client) putStream(sc *sockConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || sc.spent || len(c.idle) >= maxIdleStreams {
		sc.Close()
		return
	}
	c.idle = append(c.idle, sc)
}
