// Package transport gives the agent its listener: AF_VSOCK inside a VM, a
// Unix socket for tests and host-side runs. Both are net.Listeners, so the
// RPC server does not know which one it serves.
package transport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
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

type vsockListener struct {
	f    *os.File
	addr VsockAddr
}

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
	return &vsockConn{File: os.NewFile(uintptr(nfd), "vsock-conn"), local: l.addr, remote: remote}, nil
}

func (l *vsockListener) Close() error   { return l.f.Close() }
func (l *vsockListener) Addr() net.Addr { return l.addr }

// vsockConn is an accepted vsock connection; os.File gives it poller-backed
// Read, Write, Close and deadlines.
type vsockConn struct {
	*os.File
	local, remote VsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr                { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr               { return c.remote }
func (c *vsockConn) SetDeadline(t time.Time) error      { return c.File.SetDeadline(t) }
func (c *vsockConn) SetReadDeadline(t time.Time) error  { return c.File.SetReadDeadline(t) }
func (c *vsockConn) SetWriteDeadline(t time.Time) error { return c.File.SetWriteDeadline(t) }
