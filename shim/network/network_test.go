package network

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/embervm/ember/internal/tap"
	"github.com/embervm/ember/internal/tap/taptest"
)

// podNet builds what CNI leaves behind, in fresh namespaces: the pod's
// eth0 (10.99.0.2/24, default route via 10.99.0.1, MTU 1450), a veth whose
// peer sits in a second namespace (the "bridge" side, 10.99.0.1/24).
func podNet(t *testing.T) (pod, peer string, eth0 netlink.Link) {
	t.Helper()
	pod, peer = taptest.NetNS(t), taptest.NetNS(t)
	h, err := handleAt(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	pns, err := netns.GetFromPath(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1450}, PeerName: "peer0", PeerNamespace: netlink.NsFd(pns)}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if eth0, err = h.LinkByName("eth0"); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("10.99.0.2/24")
	if err := h.AddrAdd(eth0, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}); err != nil {
		t.Fatal(err)
	}
	ph, err := handleAt(peer)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	p0, err := ph.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	paddr, _ := netlink.ParseAddr("10.99.0.1/24")
	if err := ph.AddrAdd(p0, paddr); err != nil {
		t.Fatal(err)
	}
	if err := ph.LinkSetUp(p0); err != nil {
		t.Fatal(err)
	}
	return pod, peer, eth0
}

func TestDiscover(t *testing.T) {
	podNS, _, eth0 := podNet(t)
	// The VM's TAP in the same namespace is not a candidate.
	td, err := tap.Create(tap.Config{Name: "tap0", NetNS: podNS})
	if err != nil {
		t.Fatal(err)
	}
	defer td.Close()
	p, err := Discover(podNS)
	if err != nil {
		t.Fatal(err)
	}
	want := &Pod{NetNS: podNS, Link: "eth0", MAC: eth0.Attrs().HardwareAddr, MTU: 1450,
		Addrs:  []netip.Prefix{netip.MustParsePrefix("10.99.0.2/24")},
		Routes: []Route{{Gateway: netip.MustParseAddr("10.99.0.1")}}}
	if p.Link != want.Link || !bytes.Equal(p.MAC, want.MAC) || p.MTU != want.MTU ||
		len(p.Addrs) != 1 || p.Addrs[0] != want.Addrs[0] || len(p.Routes) != 1 || p.Routes[0] != want.Routes[0] {
		t.Fatalf("got %+v\nwant %+v", p, want)
	}
	req := p.Request()
	mac := eth0.Attrs().HardwareAddr.String()
	if len(req.Interfaces) != 1 || req.Interfaces[0].Mac != mac || req.Interfaces[0].Mtu != 1450 ||
		len(req.Interfaces[0].Addresses) != 1 || req.Interfaces[0].Addresses[0] != "10.99.0.2/24" {
		t.Errorf("request interfaces %v", req.Interfaces)
	}
	if len(req.Routes) != 1 || req.Routes[0].Destination != "default" || req.Routes[0].Gateway != "10.99.0.1" || req.Routes[0].Mac != mac {
		t.Errorf("request routes %v", req.Routes)
	}
}

func TestDiscoverEdges(t *testing.T) {
	// Only loopback: no network, no error.
	if p, err := Discover(taptest.NetNS(t)); p != nil || err != nil {
		t.Errorf("loopback only: %+v, %v", p, err)
	}
	if _, err := Discover("/nonexistent/netns"); !errors.Is(err, ErrNamespace) {
		t.Errorf("missing namespace: %v, want ErrNamespace", err)
	}
	// Two interfaces: which one is the pod's is not guessed.
	podNS, _, _ := podNet(t)
	h, _ := handleAt(podNS)
	defer h.Close()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}, PeerName: "eth1p"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Discover(podNS); !errors.Is(err, ErrNoInterface) {
		t.Errorf("three interfaces: %v, want ErrNoInterface", err)
	}
}

// readFrame reads one frame of the test EtherType from the TAP, or nil
// after timeout.
func readFrame(t *testing.T, d *tap.Device, timeout time.Duration) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := d.Read(buf)
			if err != nil {
				got <- nil
				return
			}
			f := buf[tap.VnetHdrSize:n]
			if len(f) >= 14 && uint16(f[12])<<8|uint16(f[13]) == taptest.TestEtherType {
				got <- append([]byte(nil), f...)
				return
			}
		}
	}()
	select {
	case f := <-got:
		return f
	case <-time.After(timeout):
		return nil
	}
}

// TestConnect passes frames both ways between the CNI interface's peer and
// the TAP's descriptor (the VMM's side), then removes the redirect.
func TestConnect(t *testing.T) {
	podNS, peerNS, eth0 := podNet(t)
	td, err := tap.Create(tap.Config{Name: "tap0", NetNS: podNS})
	if err != nil {
		t.Fatal(err)
	}
	defer td.Close()
	p, err := Discover(podNS)
	if err != nil {
		t.Fatal(err)
	}
	if err := Connect(p, "tap0"); err != nil {
		t.Fatal(err)
	}
	ph, _ := handleAt(peerNS)
	defer ph.Close()
	p0, err := ph.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	sock := taptest.NewPacketSocket(t, peerNS, p0.Attrs().Index)
	guestMAC := eth0.Attrs().HardwareAddr

	// Network -> guest: what the bridge side sends to eth0 comes out of
	// the TAP.
	in := taptest.Frame(guestMAC, p0.Attrs().HardwareAddr, []byte("to the guest"))
	sock.Send(t, in)
	if got := readFrame(t, td, 5*time.Second); !bytes.Equal(got, in) {
		t.Fatalf("TAP read %x, want %x", got, in)
	}
	// Guest -> network: what the VMM writes to the TAP reaches the peer.
	out := taptest.Frame(p0.Attrs().HardwareAddr, guestMAC, []byte("from the guest"))
	if _, err := td.Write(append(make([]byte, tap.VnetHdrSize), out...)); err != nil {
		t.Fatal(err)
	}
	if got := sock.Receive(t, taptest.TestEtherType, 5*time.Second); !bytes.Equal(got, out) {
		t.Fatalf("peer received %x, want %x", got, out)
	}

	if err := Disconnect(p); err != nil {
		t.Fatal(err)
	}
	h, _ := handleAt(podNS)
	defer h.Close()
	qs, err := h.QdiscList(eth0)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Type() == "ingress" {
			t.Errorf("ingress qdisc left on eth0 after Disconnect: %+v", q)
		}
	}
	// Twice, and once the namespace's interface is gone: no error.
	if err := Disconnect(p); err != nil {
		t.Errorf("second Disconnect: %v", err)
	}
	if err := Disconnect(&Pod{NetNS: "/nonexistent/netns", Link: "eth0"}); err != nil {
		t.Errorf("Disconnect without namespace: %v", err)
	}
	// A redirect left behind (a crashed shim's) does not stop a new one.
	if err := Connect(p, "tap0"); err != nil {
		t.Fatal(err)
	}
	if err := Connect(p, "tap0"); err != nil {
		t.Errorf("Connect over a stale redirect: %v", err)
	}
	if err := Disconnect(p); err != nil {
		t.Fatal(err)
	}
	if err := Connect(p, "no-such-tap"); !errors.Is(err, ErrRedirect) {
		t.Errorf("Connect to a missing TAP: %v, want ErrRedirect", err)
	}
}

func TestNetNSFromSpec(t *testing.T) {
	tests := []struct {
		name string
		spec *specs.Spec
		want string
	}{
		{"nil", nil, ""},
		{"no linux", &specs.Spec{}, ""},
		{"new namespace", &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}}}, ""},
		{"cni", &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
			{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"}}}}, "/var/run/netns/cni-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NetNSFromSpec(tc.spec); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
