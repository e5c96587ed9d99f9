package vmmproc

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/kvm"
)

// directLease is a leased instance with a direct-claim socket, as the
// warm pool sets one up: the supervisor's end of the lease, and the path
// of the direct-claim socket.
type directLease struct {
	inst  *Instance
	lease int
	path  string
	lost  chan struct{}
}

func newDirectLease(t *testing.T, ctx context.Context) *directLease {
	t.Helper()
	_, inst := identityInstance(t, ctx, 4096)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]) })
	path := filepath.Join(t.TempDir(), "0")
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	inst.StartPaused()
	d := &directLease{inst: inst, lease: fds[0], path: path, lost: make(chan struct{})}
	handover := api.LeaseAnswer{PID: 4242, Socket: "/run/vm1.sock", Vsock: "/run/vm1.sock.vsock"}
	err = inst.ServeLease(ctx, os.NewFile(uintptr(fds[1]), "lease"), func() { close(d.lost) },
		LeaseOptions{Direct: os.NewFile(uintptr(s), path), Handover: handover})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// send sends a direct claim, passing one end of a new socket pair, and
// returns the other end (where the answer comes). With noFD it passes
// nothing.
func (d *directLease) send(t *testing.T, claim string, noFD bool) (int, error) {
	t.Helper()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(pair[0]) })
	defer unix.Close(pair[1])
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	var oob []byte
	if !noFD {
		oob = unix.UnixRights(pair[1])
	}
	return pair[0], unix.Sendmsg(s, []byte(claim), oob, &unix.SockaddrUnix{Name: d.path}, 0)
}

// readAnswer reads one answer from fd; ok is false if fd closed without
// one.
func readAnswer(t *testing.T, fd int) (a api.LeaseAnswer, ok bool) {
	t.Helper()
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	if err == unix.ECONNRESET || err == nil && n == 0 {
		return a, false
	}
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if err := json.Unmarshal(buf[:n], &a); err != nil {
		t.Fatalf("answer %q: %v", buf[:n], err)
	}
	return a, true
}

// hold stops the first vCPU's thread (in Do) until release is called,
// so that what is sent meanwhile waits for it.
func (d *directLease) hold(ctx context.Context) (release func()) {
	rel := make(chan struct{})
	held := make(chan struct{})
	go d.inst.m.VCPUs()[0].Do(ctx, func(*kvm.VCPU) error { close(held); <-rel; return nil })
	<-held
	return func() { close(rel) }
}

func (d *directLease) waitLost(t *testing.T, want bool) {
	t.Helper()
	select {
	case <-d.lost:
		if !want {
			t.Fatal("lost was called")
		}
	case <-time.After(map[bool]time.Duration{true: 10 * time.Second, false: 50 * time.Millisecond}[want]):
		if want {
			t.Fatal("lost was not called")
		}
	}
}

// TestServeLeaseDirect drives the direct-claim socket as claimers do: one
// datagram with the claim and the socket to answer on.
func TestServeLeaseDirect(t *testing.T) {
	nonce := strings.Repeat("b2", 32)
	want, _ := testguest.IdentityValue(nonce)
	claim := func(id string, resume bool) string {
		b, _ := json.Marshal(api.LeaseClaim{Identity: api.Identity{ID: id, Nonce: nonce}, Resume: resume})
		return string(b)
	}
	t.Run("claim and resume", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		fd, err := d.send(t, claim("c1", true), false)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := readAnswer(t, fd)
		if !ok || a.Error != "" || a.ID != "c1" || a.PID != 4242 || a.Socket != "/run/vm1.sock" || a.Vsock != "/run/vm1.sock.vsock" {
			t.Fatalf("answer %+v (%v), want the handover of claim c1", a, ok)
		}
		// The supervisor is told on the lease.
		n, err := readLease(d.lease)
		if err != nil || !n.Direct || n.ID != "c1" || n.Error != "" {
			t.Fatalf("notice on the lease: %+v, %v", n, err)
		}
		// Claimed: a second claim is refused, the socket is closed.
		if _, err := d.send(t, claim("c2", true), false); !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("a second direct claim: %v, want ECONNREFUSED", err)
		}
		ei, err := d.inst.Wait(ctx)
		if err != nil || ei.Error != "" || len(ei.Reports) < 1 || ei.Reports[0] != want {
			t.Fatalf("guest ended with %+v, %v; want identity %#x reported", ei, err, want)
		}
		d.waitLost(t, false)
	})
	t.Run("paused, named by the VMM", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		fd, _ := d.send(t, claim("", false), false)
		if a, ok := readAnswer(t, fd); !ok || a.Error != "" || a.ID != "vm1" {
			t.Fatalf("answer %+v (%v), want claim vm1 (the VMM's id)", a, ok)
		}
		if info := d.inst.Info(); info.State != api.StatePaused || info.Identity == nil || info.Identity.ID != "vm1" {
			t.Fatalf("after a paused claim: %+v", info)
		}
		if err := d.inst.Resume(ctx); err != nil {
			t.Fatalf("the claimer's resume: %v", err)
		}
		if ei, err := d.inst.Wait(ctx); err != nil || len(ei.Reports) < 1 || ei.Reports[0] != want {
			t.Fatalf("guest ended with %+v, %v", ei, err)
		}
	})
	t.Run("a claim without a socket is ignored", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		if _, err := d.send(t, claim("x", true), true); err != nil {
			t.Fatal(err)
		}
		fd, err := d.send(t, claim("c1", true), false)
		if err != nil {
			t.Fatalf("the VMM stopped taking direct claims: %v", err)
		}
		if a, ok := readAnswer(t, fd); !ok || a.Error != "" || a.ID != "c1" {
			t.Fatalf("answer %+v (%v)", a, ok)
		}
	})
	t.Run("two claims: one wins, the other's socket closes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		// Both are queued before the vCPU thread can take one (the VM
		// is held: its thread is stopped in Do until both are sent).
		release := d.hold(ctx)
		fd1, err1 := d.send(t, claim("c1", true), false)
		fd2, err2 := d.send(t, claim("c2", true), false)
		release()
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		a1, ok1 := readAnswer(t, fd1)
		a2, ok2 := readAnswer(t, fd2)
		if !ok1 || a1.ID != "c1" || ok2 {
			t.Fatalf("answers %+v (%v) and %+v (%v); want the first answered and the second's socket closed", a1, ok1, a2, ok2)
		}
	})
	t.Run("a lease claim first refuses direct claims", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		if _, err := unix.Write(d.lease, []byte(claim("l1", true))); err != nil {
			t.Fatal(err)
		}
		if a, err := readLease(d.lease); err != nil || a.Error != "" || a.Direct {
			t.Fatalf("lease answer %+v, %v", a, err)
		}
		if _, err := d.send(t, claim("c1", true), false); !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("a direct claim after the lease claim: %v, want ECONNREFUSED", err)
		}
	})
	t.Run("malformed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		fd, _ := d.send(t, `{"identity":`, false)
		if a, ok := readAnswer(t, fd); !ok || !strings.Contains(a.Error, "malformed") {
			t.Fatalf("answer %+v (%v), want a malformed-claim error", a, ok)
		}
		if n, err := readLease(d.lease); err != nil || !n.Direct || !strings.Contains(n.Error, "malformed") {
			t.Fatalf("notice %+v, %v", n, err)
		}
		d.waitLost(t, true)
	})
	t.Run("the claimer hangs up", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		// Hold the vCPU thread so that the claimer is gone before the
		// answer.
		release := d.hold(ctx)
		fd, _ := d.send(t, claim("c1", false), false)
		unix.Close(fd)
		release()
		if n, err := readLease(d.lease); err != nil || !n.Direct || !strings.Contains(n.Error, "went away") {
			t.Fatalf("notice %+v, %v; want the claimer gone", n, err)
		}
		d.waitLost(t, true)
	})
	t.Run("supervisor gone", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d := newDirectLease(t, ctx)
		unix.Close(d.lease)
		d.waitLost(t, true)
	})
}

// readLease reads one message from the supervisor's end of a lease.
func readLease(fd int) (api.LeaseAnswer, error) {
	var a api.LeaseAnswer
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 4096)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return a, err
	}
	return a, json.Unmarshal(buf[:n], &a)
}
