package transport

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
)

func TestListenAddresses(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "a.sock")
	tests := []struct {
		addr    string
		wantErr bool
	}{
		{"unix://" + sock, false},
		{"unix://" + sock, false}, // a stale socket is replaced
		{"tcp://127.0.0.1:1", true},
		{"vsock://notaport", true},
	}
	for _, tc := range tests {
		l, err := Listen(tc.addr)
		if (err != nil) != tc.wantErr {
			t.Fatalf("Listen(%q): %v", tc.addr, err)
		}
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Errorf("Listen(%q): %v is not ErrBadAddress", tc.addr, err)
			}
			continue
		}
		go func() {
			c, err := net.Dial("unix", sock)
			if err == nil {
				c.Write([]byte("hi"))
				c.Close()
			}
		}()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(c)
		if string(b) != "hi" {
			t.Errorf("read %q", b)
		}
		c.Close()
		l.Close()
	}
}

func TestVsockListener(t *testing.T) {
	// The development hosts have no vhost-vsock; the loopback transport
	// (vsock_loopback) may or may not be there. Binding must either work
	// or fail with a clear error, and a bound listener must close cleanly.
	l, err := ListenVsock(10240)
	if err != nil {
		t.Logf("vsock not available on this host: %v", err)
		return
	}
	if l.Addr().Network() != "vsock" {
		t.Errorf("network %q", l.Addr().Network())
	}
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	l.Close()
	if err := <-done; err == nil {
		t.Error("Accept after Close succeeded")
	}
}
