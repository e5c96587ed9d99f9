package identity

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
)

// NetworkConfig is the guest's network set-up as the host wants it.
type NetworkConfig struct {
	Interfaces []Interface
	Routes     []Route
	DNS        DNS
}

// Interface configures the link with a given MAC address.
type Interface struct {
	MAC       net.HardwareAddr
	Name      string // rename to this, if set
	Addresses []*net.IPNet
	MTU       int // 0 leaves it
}

// Route is one route; Dst nil is the default route.
type Route struct {
	Dst *net.IPNet
	Gw  net.IP
	MAC net.HardwareAddr // the route's interface, if set
}

// DNS is the content of resolv.conf.
type DNS struct {
	Servers []net.IP
	Search  []string
	Options []string
}

// Network applies NetworkConfigs through netlink.
type Network struct {
	// Handle is the netlink handle (of the guest's network namespace).
	Handle *netlink.Handle
	// ResolvConf is the file DNS settings go to (/etc/resolv.conf).
	ResolvConf string
}

// Configure brings up lo, then each interface (matched by MAC: names are
// not stable across VMs) with its addresses, then the routes, then DNS.
// Addresses and routes are replaced, so calling it again with the same
// configuration is harmless.
func (n *Network) Configure(cfg NetworkConfig) error {
	if lo, err := n.Handle.LinkByName("lo"); err == nil {
		if err := n.Handle.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
	}
	links, err := n.Handle.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, ifc := range cfg.Interfaces {
		if err := n.configureInterface(links, ifc); err != nil {
			return err
		}
	}
	for _, r := range cfg.Routes {
		if err := n.addRoute(links, r); err != nil {
			return err
		}
	}
	if len(cfg.DNS.Servers) > 0 && n.ResolvConf != "" {
		if err := writeResolvConf(n.ResolvConf, cfg.DNS); err != nil {
			return err
		}
	}
	return nil
}

func linkByMAC(links []netlink.Link, mac net.HardwareAddr) (netlink.Link, error) {
	for _, l := range links {
		if bytes.Equal(l.Attrs().HardwareAddr, mac) {
			return l, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", mac, ErrNoInterface)
}

func (n *Network) configureInterface(links []netlink.Link, ifc Interface) error {
	link, err := linkByMAC(links, ifc.MAC)
	if err != nil {
		return err
	}
	name := link.Attrs().Name
	if ifc.Name != "" && ifc.Name != name {
		if err := n.Handle.LinkSetDown(link); err != nil {
			return fmt.Errorf("set %s down: %w", name, err)
		}
		if err := n.Handle.LinkSetName(link, ifc.Name); err != nil {
			return fmt.Errorf("rename %s to %s: %w", name, ifc.Name, err)
		}
		name = ifc.Name
	}
	if ifc.MTU > 0 {
		if err := n.Handle.LinkSetMTU(link, ifc.MTU); err != nil {
			return fmt.Errorf("set %s mtu: %w", name, err)
		}
	}
	for _, a := range ifc.Addresses {
		if err := n.Handle.AddrReplace(link, &netlink.Addr{IPNet: a}); err != nil {
			return fmt.Errorf("add %s to %s: %w", a, name, err)
		}
	}
	if err := n.Handle.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

func (n *Network) addRoute(links []netlink.Link, r Route) error {
	nr := &netlink.Route{Dst: r.Dst, Gw: r.Gw}
	if r.MAC != nil {
		link, err := linkByMAC(links, r.MAC)
		if err != nil {
			return err
		}
		nr.LinkIndex = link.Attrs().Index
	}
	if r.Gw == nil {
		nr.Scope = netlink.SCOPE_LINK
	}
	if err := n.Handle.RouteReplace(nr); err != nil {
		return fmt.Errorf("add route %v via %v: %w", r.Dst, r.Gw, err)
	}
	return nil
}

// ResolvConf renders a resolv.conf.
func ResolvConf(d DNS) []byte {
	var b strings.Builder
	b.WriteString("# written by ember-agent\n")
	for _, s := range d.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(d.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.Search, " "))
	}
	if len(d.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.Options, " "))
	}
	return []byte(b.String())
}

func writeResolvConf(path string, d DNS) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, ResolvConf(d), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("write resolv.conf: %w", err), os.Remove(tmp))
	}
	return nil
}

// ParseCIDRs parses addresses such as 192.0.2.10/24, keeping the host
// address (net.ParseCIDR would give the network).
func ParseCIDRs(list []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range list {
		ip, ipnet, err := net.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("address %q: %w", s, ErrInvalidNetwork)
		}
		ipnet.IP = ip
		out = append(out, ipnet)
	}
	return out, nil
}
