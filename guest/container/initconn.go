package container

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// initConn is the agent's end of the socketpair to a container-init child.
type initConn struct {
	c   net.Conn
	enc *json.Encoder
	dec *json.Decoder
}

// newInitConn makes the socketpair; child goes to the child as fd 3.
func newInitConn() (*initConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	pf := os.NewFile(uintptr(fds[0]), "init-sock")
	defer pf.Close() // FileConn dups it
	c, err := net.FileConn(pf)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("init socket: %w", err)
	}
	return &initConn{c: c, enc: json.NewEncoder(c), dec: json.NewDecoder(c)}, os.NewFile(uintptr(fds[1]), "init-sock-child"), nil
}

func (c *initConn) send(v any) error {
	if err := c.enc.Encode(v); err != nil {
		return fmt.Errorf("send to container init: %w", err)
	}
	return nil
}

// recv reads the child's next reply. io.EOF (unwrapped) means the child
// closed the socket: after start that is a successful exec.
func (c *initConn) recv(ctx context.Context) (initReply, error) {
	stop := context.AfterFunc(ctx, func() { _ = c.c.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var r initReply
	err := c.dec.Decode(&r)
	if err != nil && ctx.Err() != nil {
		return r, fmt.Errorf("wait for container init: %w", ctx.Err())
	}
	return r, err
}

func (c *initConn) close() { c.c.Close() }

// asError turns an error reply into an error wrapping the right sentinel.
func (r initReply) asError() error {
	switch {
	case r.Setup:
		return fmt.Errorf("%w: %s", ErrSetup, r.Error)
	case r.NotFound:
		return fmt.Errorf("%w: %s", ErrExecNotFound, r.Error)
	default:
		return fmt.Errorf("%w: %s", ErrExec, r.Error)
	}
}
