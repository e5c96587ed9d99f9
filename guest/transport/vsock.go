// Package transport gives the agent its listener: AF_VSOCK inside a VM, a
// Unix socket for tests and host-side runs. Both are net.Listeners, so the
// RPC server does not know which one it serves.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBadAddress is an address that is neither vsock://PORT nor unix://PATH.
var ErrBadAddress = errors.New("bad listen address")

// Listen listens on "vsock://PORT" (any CID, i.e. the guest's own) or
// "unix://PATH" (a stale socket file is removed first).
func Listen(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "vsock://"):
		port, err := strconv.ParseUint(strings.TrimPrefix(addr, "vsock://"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", addr, ErrBadAddress)
		}
		return ListenVsock(uint32(port))
	case strings.HasPrefix(addr, "unix://"):
		path := strings.TrimPrefix(addr, "unix://")
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
		return net.Listen("unix", path)
	}
	return nil, fmt.Errorf("%q: %w", addr, ErrBadAddress)
}

// VsockAddr is a vsock address.
type VsockAddr struct {
	CID, Port uint32
}

// Network is "vsock".
func (a VsockAddr) Network() string { return "vsock" }

func (a VsockAddr) String() string { return fmt.Sprintf("vsock://%d:%d", a.CID, a.Port) }

// ListenVsock listens on port of any local CID. The socket is non-blocking
// and handed to Go's poller (through os.File and net.FileListener would
// refuse AF_VSOCK), so Accept and Close behave as for any net.Listener.
func ListenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", os.NewSyscallError("socket", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock bind port %d: %w", port, os.NewSyscallError("bind", err))
	}
	if err := unix.Listen(fd, 128); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("vsock listen: %w", os.NewSyscallError("listen", err))
	}
	return &vsockListener{f: os.NewFile(uintptr(fd), "vsock"), addr: VsockAddr{CID: unix.VMADDR_CID_ANY, Port: port}}, nil
}

// Drainer is a listener whose accepted connections can be waited for.
type Drainer interface {
	// Drain waits until every accepted connection was closed and what was
	// written to it was delivered, or ctx ends.
	Drain(ctx context.Context) error
}

// closeLinger bounds how long closing an accepted vsock connection waits
// for the host's side to take what was written (see vsockConn.Close).
const closeLinger = 2 // seconds

type vsockListener struct {
	f    *os.File
	addr VsockAddr
	open sync.WaitGroup // accepted connections not yet closed
}

var _ Drainer = (*vsockListener)(nil)

func (l *vsockListener) Accept() (net.Conn, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		nfd   int
		sa    unix.Sockaddr
		opErr error
	)
	err = rc.Read(func(fd uintptr) bool {
		nfd, sa, opErr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		return opErr != unix.EAGAIN
	})
	if err != nil {
		return nil, fmt.Errorf("vsock accept: %w", err)
	}
	if opErr != nil {
		return nil, fmt.Errorf("vsock accept: %w", os.NewSyscallError("accept4", opErr))
	}
	remote := VsockAddr{}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		remote = VsockAddr{CID: vm.CID, Port: vm.Port}
	}
	// Lingering makes close(2) wait until the host side acknowledged the
	// close, which it does after everything sent before it.
	if err := unix.SetsockoptLinger(nfd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: closeLinger}); err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("vsock accept: %w", os.NewSyscallError("setsockopt(SO_LINGER)", err))
	}
	l.open.Add(1)
	return &vsockConn{File: os.NewFile(uintptr(nfd), "vsock-conn"), local: l.addr, remote: remote, closed: l.open.Done}, nil
}

// Drain waits until every accepted connection was closed. Because each
// close lingers until the host acknowledged it, what the agent wrote (the
// reply to a Shutdown call, say) has then left the guest: the guest kernel
// sends vsock packets from a work queue, so a reboot right after a write
// could otherwise lose them.
func (l *vsockListener) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		l.open.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("vsock: connections still open: %w", ctx.Err())
	}
}

func (l *vsockListener) Close() error   { return l.f.Close() }
func (l *vsockListener) Addr() net.Addr { return l.addr }

// vsockConn is an accepted vsock connection; os.File gives it poller-backed
// Read, Write, Close and deadlines.
type vsockConn struct {
	*os.File
	local, remote VsockAddr
	closed        func() // tells the listener
	once          sync.Once
}

// Close closes the connection. It returns once the socket is released
// (os.File waits for the close(2) of a non-blocking descriptor), which with
// SO_LINGER is when the host answered the close or closeLinger passed.
func (c *vsockConn) Close() error {
	err := c.File.Close()
	c.once.Do(c.closed)
	return err
}

func (c *vsockConn) LocalAddr() net.Addr                { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr               { return c.remote }
func (c *vsockConn) SetDeadline(t time.Time) error      { return c.File.SetDeadline(t) }
func (c *vsockConn) SetReadDeadline(t time.Time) error  { return c.File.SetReadDeadline(t) }
func (c *vsockConn) SetWriteDeadline(t time.Time) error { return c.File.SetWriteDeadline(t) }
