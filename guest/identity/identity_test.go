package identity

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestSetClockStepsToGivenTime(t *testing.T) {
	// Step to "now" as read just before: the host clock moves by at most
	// the call's own latency, and the syscall path is exercised for real.
	step, err := SetClock(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if step > 0 || step < -time.Second {
		t.Errorf("step = %v, want a tiny negative step", step)
	}
	if _, err := SetClock(time.Time{}); err == nil {
		t.Error("SetClock(zero) succeeded")
	}
}

func TestAddEntropy(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		bits    int
		wantErr bool
	}{
		{"64 bytes", make([]byte, 64), 0, false},
		{"partial credit", make([]byte, 32), 10, false},
		{"empty", nil, 0, true},
		{"too big", make([]byte, MaxEntropyBytes+1), 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := AddEntropy("/dev/random", tc.data, tc.bits)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
	if n := EntropyAvail(); n <= 0 {
		t.Errorf("entropy_avail = %d", n)
	}
}

func TestResolvConf(t *testing.T) {
	got := string(ResolvConf(DNS{
		Servers: []net.IP{net.ParseIP("192.0.2.53")},
		Search:  []string{"example.test"},
		Options: []string{"ndots:2"},
	}))
	want := "# written by ember-agent\nnameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// newNetns makes a network namespace without leaving the test in it.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func TestConfigureNetwork(t *testing.T) {
	h, err := netlink.NewHandleAt(newNetns(t))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mac, _ := net.ParseMAC("02:00:00:00:00:07")
	// A bridge stands in for a virtio NIC: the development hosts' kernel has
	// neither the dummy nor the veth driver.
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", HardwareAddr: mac}}); err != nil {
		t.Fatal(err)
	}
	addrs, err := ParseCIDRs([]string{"192.0.2.10/24"})
	if err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	n := &Network{Handle: h, ResolvConf: resolv}
	cfg := NetworkConfig{
		Interfaces: []Interface{{MAC: mac, Name: "eth0", Addresses: addrs, MTU: 1400}},
		Routes:     []Route{{Gw: net.ParseIP("192.0.2.1")}},
		DNS:        DNS{Servers: []net.IP{net.ParseIP("192.0.2.53")}},
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := n.Configure(cfg); err != nil {
			t.Fatalf("Configure #%d: %v", i+1, err)
		}
	}
	link, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().MTU != 1400 || link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("eth0 attrs: mtu %d flags %v", link.Attrs().MTU, link.Attrs().Flags)
	}
	got, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil || len(got) != 1 || got[0].IPNet.String() != "192.0.2.10/24" {
		t.Errorf("addresses = %v (%v)", got, err)
	}
	routes, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var def bool
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(net.ParseIP("192.0.2.1")) {
			def = true
		}
	}
	if !def {
		t.Errorf("no default route in %v", routes)
	}
	b, err := os.ReadFile(resolv)
	if err != nil || !strings.Contains(string(b), "nameserver 192.0.2.53") {
		t.Errorf("resolv.conf = %q (%v)", b, err)
	}
	wrong, _ := net.ParseMAC("02:00:00:00:00:08")
	if err := n.Configure(NetworkConfig{Interfaces: []Interface{{MAC: wrong}}}); err == nil {
		t.Error("Configure with an unknown MAC succeeded")
	}
}
