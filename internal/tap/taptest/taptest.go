// Package taptest gives tests a private network namespace and a packet
// socket on an interface in it, so TAP tests neither touch nor leak into
// the host's network configuration. Everything needs root (CAP_NET_ADMIN,
// CAP_NET_RAW, CAP_SYS_ADMIN).
package taptest

import (
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNewThread runs f on a locked thread that is thrown away afterwards, so
// that a namespace change in f cannot leak to other goroutines.
func inNewThread(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with us
		done <- f()
	}()
	return <-done
}

// NetNS creates a fresh network namespace and returns a path that names it
// (/proc/self/fd/N) for as long as the test runs. The namespace, and every
// interface in it, disappears when the test ends, even if the process
// dies.
func NetNS(t testing.TB) string {
	t.Helper()
	var ns netns.NsHandle
	err := inNewThread(func() error {
		var err error
		if ns, err = netns.New(); err != nil {
			return err
		}
		// No IPv6 on new interfaces: no router solicitations or MLD
		// reports mixed into the frames a test watches.
		for _, p := range []string{"/proc/sys/net/ipv6/conf/default/disable_ipv6", "/proc/sys/net/ipv6/conf/all/disable_ipv6"} {
			if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("taptest: new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return fmt.Sprintf("/proc/self/fd/%d", int(ns))
}

// PacketSocket is an AF_PACKET socket bound to one interface: it sees every
// frame the interface transmits or receives and can inject frames.
type PacketSocket struct {
	fd      int
	ifindex int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// NewPacketSocket opens a packet socket on interface ifindex of the
// namespace at nsPath ("" for the current one). It is closed when the test
// ends.
func NewPacketSocket(t testing.TB, nsPath string, ifindex int) *PacketSocket {
	t.Helper()
	var fd int
	err := inNewThread(func() error {
		if nsPath != "" {
			ns, err := netns.GetFromPath(nsPath)
			if err != nil {
				return err
			}
			defer ns.Close()
			if err := netns.Set(ns); err != nil {
				return err
			}
		}
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex})
	})
	if err != nil {
		t.Fatalf("taptest: packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &PacketSocket{fd: fd, ifindex: ifindex}
}

// Send injects a frame, as if it arrived from the network, into the
// interface (for a TAP: it comes out of the TAP's descriptor).
func (s *PacketSocket) Send(t testing.TB, frame []byte) {
	t.Helper()
	if err := unix.Sendto(s.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: s.ifindex, Halen: 6}); err != nil {
		t.Fatalf("taptest: send: %v", err)
	}
}

// Receive waits up to timeout for a frame of the given EtherType (others,
// such as IPv6 neighbour discovery, are skipped) and returns it.
func (s *PacketSocket) Receive(t testing.TB, etherType uint16, timeout time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("taptest: no frame of type %#04x within %v", etherType, timeout)
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("taptest: receive: %v", err)
		}
		if n >= 14 && binary.BigEndian.Uint16(buf[12:]) == etherType {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// TestEtherType is an EtherType reserved for local experiments (IEEE
// 802 local experimental 1), which nothing else on a test interface sends.
const TestEtherType = 0x88b5

// Frame builds an Ethernet frame of TestEtherType from src to dst.
func Frame(dst, src []byte, payload []byte) []byte {
	f := make([]byte, 14, 14+len(payload))
	copy(f[0:], dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], TestEtherType)
	return append(f, payload...)
}
