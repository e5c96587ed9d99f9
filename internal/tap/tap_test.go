package tap_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/embervm/ember/internal/tap"
	"github.com/embervm/ember/internal/tap/taptest"
)

func handleIn(t *testing.T, nsPath string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

var hostMAC = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}

func TestCreateConfigureClose(t *testing.T) {
	ns := taptest.NetNS(t)
	d, err := tap.Create(tap.Config{
		Name: "embertap0", MAC: hostMAC, MTU: 1400, NetNS: ns,
		Addrs: []netip.Prefix{netip.MustParsePrefix("10.11.12.1/24")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	h := handleIn(t, ns)
	l, err := h.LinkByName("embertap0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Attrs()
	if d.Name() != "embertap0" || a.Index != d.Index() || a.MTU != 1400 || a.HardwareAddr.String() != hostMAC.String() || a.Flags&net.FlagUp == 0 {
		t.Errorf("link %+v", a)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != "10.11.12.1/24" {
		t.Errorf("addresses %v, %v", addrs, err)
	}
	// Not in the caller's namespace.
	if _, err := netlink.LinkByName("embertap0"); err == nil {
		t.Error("TAP visible in the host namespace")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("embertap0"); err == nil {
		t.Error("TAP still exists after Close")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := d.Read(make([]byte, 100)); !errors.Is(err, tap.ErrClosed) {
		t.Errorf("Read after Close: %v", err)
	}
}

func TestKernelPicksName(t *testing.T) {
	d, err := tap.Create(tap.Config{NetNS: taptest.NetNS(t), Down: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name() == "" || d.Index() == 0 {
		t.Errorf("name %q index %d", d.Name(), d.Index())
	}
}

func TestFramesBothWays(t *testing.T) {
	ns := taptest.NetNS(t)
	d, err := tap.Create(tap.Config{Name: "embertap1", MAC: hostMAC, NetNS: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ps := taptest.NewPacketSocket(t, ns, d.Index())
	guestMAC := []byte{0x02, 0xee, 0, 0, 0, 2}

	// Guest to host: header + frame written to the TAP leaves the
	// interface as a received frame.
	out := taptest.Frame(hostMAC, guestMAC, []byte("from the guest"))
	if _, err := d.Write(append(make([]byte, tap.VnetHdrSize), out...)); err != nil {
		t.Fatal(err)
	}
	if got := ps.Receive(t, taptest.TestEtherType, 5*time.Second); !bytes.Equal(got, out) {
		t.Errorf("host saw %x, want %x", got, out)
	}

	// Host to guest: a frame sent on the interface is read from the TAP
	// with an empty virtio-net header in front.
	in := taptest.Frame(guestMAC, hostMAC, []byte("from the host"))
	ps.Send(t, in)
	buf := make([]byte, 65536)
	deadline := time.After(5 * time.Second)
	got := make(chan []byte, 16)
	go func() {
		for {
			n, err := d.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	for {
		select {
		case f, ok := <-got:
			if !ok {
				t.Fatal("TAP read failed")
			}
			if len(f) < tap.VnetHdrSize+14 || !bytes.Equal(f[tap.VnetHdrSize:], in) {
				continue // neighbour discovery and the like
			}
			if !bytes.Equal(f[:10], make([]byte, 10)) {
				t.Errorf("virtio-net header %x, want zeros (offloads off)", f[:10])
			}
			d.Close() // ends the reader
			return
		case <-deadline:
			t.Fatal("frame sent on the interface never came out of the TAP")
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []tap.Config{
		{Name: "a-name-that-is-far-too-long"},
		{MTU: -1},
		{MAC: net.HardwareAddr{1, 2, 3}},
	} {
		if _, err := tap.Create(c); !errors.Is(err, tap.ErrConfig) {
			t.Errorf("Create(%+v) = %v, want ErrConfig", c, err)
		}
	}
	if _, err := tap.Create(tap.Config{NetNS: "/nonexistent"}); err == nil {
		t.Error("missing namespace accepted")
	}
}
