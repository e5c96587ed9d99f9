package vsock

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxHandshake bounds the "CONNECT <port>\n" line.
const maxHandshake = 64

// hostConnect is a host client that completed its handshake.
type hostConnect struct {
	host *net.UnixConn
	port uint32
}

// dialed is the outcome of dialing U_P for a guest-initiated connection.
type dialed struct {
	c    *conn
	host *net.UnixConn
	err  error
}

// connectTimeout is a host-initiated connection the guest did not answer.
type connectTimeout struct{ c *conn }

// listen listens on path, replacing a stale socket file that nobody
// accepts on.
func listen(path string) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Net: "unix", Name: path}
	ln, err := net.ListenUnix("unix", addr)
	if err == nil {
		return ln, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("vsock: listen on %s: %w", path, err)
	}
	fi, serr := os.Lstat(path)
	if serr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("%w: %s exists and is not a socket", ErrAddrInUse, path)
	}
	c, derr := net.DialTimeout("unix", path, time.Second)
	if derr == nil {
		c.Close()
		return nil, fmt.Errorf("%w: %s", ErrAddrInUse, path)
	}
	if !errors.Is(derr, syscall.ECONNREFUSED) {
		return nil, fmt.Errorf("%w: %s: %v", ErrAddrInUse, path, derr)
	}
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("vsock: removing stale socket: %w", err)
	}
	ln, err = net.ListenUnix("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("vsock: listen on %s: %w", path, err)
	}
	return ln, nil
}

// acceptLoop accepts host clients until the listener is closed and runs
// each one's handshake in its own goroutine.
func (d *Device) acceptLoop() {
	for {
		c, err := d.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off instead of spinning.
			d.log.Warn("accepting host vsock client", "err", err)
			select {
			case <-d.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		d.hsMu.Lock()
		select {
		case <-d.done:
			d.hsMu.Unlock()
			c.Close()
			return
		default:
		}
		d.handshakes[c] = struct{}{}
		d.wg.Add(1)
		d.hsMu.Unlock()
		go d.handshake(c)
	}
}

// handshake reads a client's "CONNECT <port>\n" and hands the client to
// the loop; a client that says anything else, or too slowly, is closed.
func (d *Device) handshake(c *net.UnixConn) {
	defer d.wg.Done()
	c.SetReadDeadline(time.Now().Add(d.cfg.ConnectTimeout))
	port, err := readConnect(c)
	d.hsMu.Lock()
	delete(d.handshakes, c)
	d.hsMu.Unlock()
	if err != nil {
		d.log.Debug("host vsock client handshake failed", "err", err)
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	if !d.post(hostConnect{host: c, port: port}) {
		c.Close()
	}
}

// readConnect reads "CONNECT <port>\n" one byte at a time, so that bytes
// the client sends after the line stay in the socket for the stream.
func readConnect(r io.Reader) (uint32, error) {
	var line []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("%w: %v", errBadHandshake, err)
		}
		if b[0] == '\n' {
			break
		}
		if len(line) >= maxHandshake {
			return 0, fmt.Errorf("%w: line longer than %d bytes", errBadHandshake, maxHandshake)
		}
		line = append(line, b[0])
	}
	return parseConnect(string(line))
}

// parseConnect parses "CONNECT <port>" (a trailing '\r' is tolerated).
func parseConnect(line string) (uint32, error) {
	line = strings.TrimSuffix(line, "\r")
	arg, ok := strings.CutPrefix(line, "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("%w: %q", errBadHandshake, line)
	}
	p, err := strconv.ParseUint(strings.TrimSpace(arg), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: port %q", errBadHandshake, arg)
	}
	return uint32(p), nil
}

// portPath is the host socket a guest connect to port reaches.
func (d *Device) portPath(port uint32) string {
	return d.cfg.UDSPath + "_" + strconv.FormatUint(uint64(port), 10)
}

// dial connects c to its host socket U_P in a goroutine and reports the
// outcome to the loop.
func (d *Device) dial(c *conn) {
	path := d.portPath(c.key.local)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		dl := net.Dialer{Timeout: d.cfg.ConnectTimeout}
		nc, err := dl.DialContext(d.ctx, "unix", path)
		var uc *net.UnixConn
		if err == nil {
			uc = nc.(*net.UnixConn)
		}
		if !d.post(dialed{c: c, host: uc, err: err}) && uc != nil {
			uc.Close()
		}
	}()
}
