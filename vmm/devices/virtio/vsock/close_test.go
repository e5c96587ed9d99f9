package vsock_test

import (
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio/vsock"
)

func openFDs(t *testing.T) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(es)
}

// settle waits until the goroutine count is at most n.
func settle(n int) int {
	deadline := time.Now().Add(3 * time.Second)
	for {
		g := runtime.NumGoroutine()
		if g <= n || time.Now().After(deadline) {
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCloseReleasesEverything closes a device with connections in every
// state and checks that no goroutine or descriptor is left and the socket
// file is gone.
func TestCloseReleasesEverything(t *testing.T) {
	baseG := runtime.NumGoroutine()
	baseFD := openFDs(t)

	g := newGuest(t, nil)
	g.start()
	var clients []net.Conn
	// Established host-initiated, with data held for the guest.
	c1, _, _ := g.connectFromHost(1024, 4096)
	c1.Write(make([]byte, 64<<10))
	clients = append(clients, c1)
	// Host-initiated waiting for the guest's answer.
	c2, _ := g.hostClient(1025)
	clients = append(clients, c2)
	// A client still in its handshake.
	c3, err := net.Dial("unix", g.path)
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, c3)
	// Established guest-initiated.
	ln := g.listenPort(70)
	g.send(hdr(vsock.OpRequest, 6000, 70), nil)
	hc, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	clients = append(clients, hc)
	// Guest-initiated whose host end never reads: its writer blocks.
	h := hdr(vsock.OpRW, 6000, 70)
	for range 8 {
		h.Len = 4096
		g.send(h, make([]byte, 4096))
	}
	time.Sleep(100 * time.Millisecond)

	g.tr.Close()
	if err := g.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.dev.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(g.path); !os.IsNotExist(err) {
		t.Errorf("socket file after Close: %v", err)
	}
	for _, c := range clients {
		c.Close()
	}
	ln.Close()
	g.mem.Close()
	if n := settle(baseG); n > baseG {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after Close, %d before:\n%s", n, baseG, buf[:runtime.Stack(buf, true)])
	}
	if n := openFDs(t); n > baseFD {
		t.Fatalf("%d descriptors after Close, %d before", n, baseFD)
	}
}

// TestNotifyAfterClose: the transport may still call the device after it
// closed; nothing blocks or panics.
func TestNotifyAfterClose(t *testing.T) {
	g := newGuest(t, nil)
	g.start()
	g.dev.Close()
	g.dev.Notify(1)
	g.dev.Pause()
	g.dev.Resume()
	g.dev.Reset()
	if _, err := g.dev.Save(); err != vsock.ErrClosed {
		t.Fatalf("Save after Close: %v", err)
	}
}
