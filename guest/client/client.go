// Package client connects the host to the guest agent (guest/api) of a
// running VM through the VMM's vsock Unix socket: it sends
// "CONNECT <port>\n", waits for the device's "OK <hostport>\n" and then
// speaks ttrpc on the stream.
//
//	c, err := client.Dial(ctx, "/run/vm1/vsock.sock", api.DefaultVsockPort)
//	...
//	defer c.Close()
//	_, err = c.Ping(ctx, &api.PingRequest{})
package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/embervm/ember/guest/api"
)

// ErrHandshake means the VMM's vsock socket did not answer "OK": nothing
// listens on the guest port (yet), or the guest did not answer in time.
var ErrHandshake = errors.New("client: vsock handshake failed")

// maxOKLine bounds the "OK <hostport>\n" reply.
const maxOKLine = 64

// Client is a ttrpc client of the agent over one connection.
type Client struct {
	api.AgentService
	conn net.Conn
	rpc  *ttrpc.Client
	// HostPort is the host-side vsock port the VMM gave the connection.
	HostPort uint32
}

// Close closes the connection.
func (c *Client) Close() error { return c.rpc.Close() }

// New wraps an established stream (for example a Unix socket the agent
// listens on directly, in tests).
func New(conn net.Conn) *Client {
	rpc := ttrpc.NewClient(conn)
	return &Client{AgentService: api.NewAgentClient(rpc), conn: conn, rpc: rpc}
}

// Connect dials the VMM's vsock socket uds once and performs the CONNECT
// handshake to guest port; it returns the raw stream. A refused or
// unanswered handshake wraps ErrHandshake.
func Connect(ctx context.Context, uds string, port uint32) (net.Conn, uint32, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", uds)
	if err != nil {
		return nil, 0, fmt.Errorf("client: %w", err)
	}
	hostPort, err := handshake(ctx, conn, port)
	if err != nil {
		conn.Close()
		return nil, 0, err
	}
	return conn, hostPort, nil
}

func handshake(ctx context.Context, conn net.Conn, port uint32) (uint32, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Second)
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return 0, err
	}
	defer conn.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	// One byte at a time: nothing after the newline belongs to us.
	var line []byte
	b := make([]byte, 1)
	for len(line) < maxOKLine {
		if _, err := conn.Read(b); err != nil {
			if ctx.Err() != nil {
				return 0, fmt.Errorf("%w: %w", ErrHandshake, ctx.Err())
			}
			return 0, fmt.Errorf("%w: port %d: %w", ErrHandshake, port, err)
		}
		if b[0] == '\n' {
			arg, ok := strings.CutPrefix(strings.TrimSuffix(string(line), "\r"), "OK ")
			if !ok {
				return 0, fmt.Errorf("%w: reply %q", ErrHandshake, line)
			}
			hp, err := strconv.ParseUint(arg, 10, 32)
			if err != nil {
				return 0, fmt.Errorf("%w: reply %q", ErrHandshake, line)
			}
			return uint32(hp), nil
		}
		line = append(line, b[0])
	}
	return 0, fmt.Errorf("%w: reply too long", ErrHandshake)
}

// Dial connects to the agent on guest port through the VMM's vsock socket
// uds. Until ctx ends it retries every interval (20 ms) while the socket
// does not exist yet or the guest refuses the port (the agent is still
// booting), so it also serves to wait for the agent.
//
// Each new connection is proven with a Ping before Dial returns it: right
// after a snapshot restore the guest may still be processing the vsock
// transport reset, which resets connections accepted just before it; Dial
// then connects again.
func Dial(ctx context.Context, uds string, port uint32) (*Client, error) {
	const interval = 20 * time.Millisecond
	for {
		conn, hp, err := Connect(ctx, uds, port)
		if err == nil {
			c := New(conn)
			c.HostPort = hp
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = c.Ping(pctx, &api.PingRequest{})
			cancel()
			if err == nil {
				return c, nil
			}
			c.Close()
			err = fmt.Errorf("client: new connection failed its first ping: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("client: dial %s port %d: %w (last error: %w)", uds, port, ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}
