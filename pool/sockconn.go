package pool

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// sockConn is a client's claim-stream connection: a blocking Unix socket,
// read and written with plain system calls. A claim is a write and a
// read: without the runtime's poller in between, the daemon's answer wakes
// the claiming thread itself, and dialing costs a socket and a connect
// (net.Dial adds registering with the poller and two address lookups;
// each system call costs microseconds on virtualized hosts). Measured
// against the same socket read through the poller (os.File on a
// non-blocking descriptor), in the same run: the same at concurrency 1,
// 2.6 instead of 3.9 ms to the first report at concurrency 8. (While a
// claim waits, its goroutine holds its thread, as any blocking system
// call does; the daemon, which serves many claims at once, reads its
// leases through the poller.)
type sockConn struct {
	f *os.File // the blocking socket (closed when collected)
	r *bufio.Reader
	// spent: a context ended a claim on it (shutting the socket down);
	// the connection is not used again.
	spent bool
}

// dialSock connects to the claim stream at path. (A connect blocks only
// while the daemon's listen backlog is full; it gives up at ctx's
// deadline, if it has one.)
func dialSock(ctx context.Context, path string) (*sockConn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	dl, timed := ctx.Deadline()
	if timed {
		tv := unix.NsecToTimeval(max(time.Until(dl), time.Microsecond).Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	}
	for {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != unix.EINTR {
			break
		}
	}
	if timed && err == nil {
		// Later claims on the connection bring their own contexts.
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{})
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "connect", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	return &sockConn{f: f, r: bufio.NewReaderSize(f, maxStreamLine)}, nil
}

// Close closes the socket.
func (s *sockConn) Close() error { return s.f.Close() }

// roundTrip writes one request line and reads the answer line. When ctx
// ends first, the socket is shut down and ctx's error returned.
func (s *sockConn) roundTrip(ctx context.Context, line []byte) (*streamAnswer, error) {
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { shutdown(s.f) })
		defer func() {
			if !stop() {
				// ctx ended: the socket is, or will be, shut down.
				s.spent = true
			}
		}()
	}
	if _, err := s.f.Write(line); err != nil {
		// Nothing was claimed. After this, a failure may come after the
		// daemon claimed a VM (it ends one whose answer it cannot write):
		// that is not ErrUnreachable, which callers take as "try elsewhere".
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, ctxErr(ctx, err))
	}
	resp, err := s.r.ReadSlice('\n')
	if errors.Is(err, syscall.ECONNRESET) {
		err = io.EOF // the daemon closed the connection
	}
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if bytes.HasPrefix(resp, []byte("HTTP/")) {
		return nil, errNoStream
	}
	a, err := parseStreamAnswer(resp)
	if err != nil {
		return nil, fmt.Errorf("malformed answer: %w", err)
	}
	return a, nil
}

// shutdown shuts a blocking socket down for both directions: a read or
// write blocked on it returns (closing it would not end them).
func shutdown(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_RDWR) })
	}
}
