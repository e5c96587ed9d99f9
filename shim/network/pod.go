package network

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/embervm/ember/guest/api"
)

// Route is a route of the pod's interface.
type Route struct {
	// Dst is the destination; the zero Prefix is the default route.
	Dst netip.Prefix
	// Gateway is the next hop; the zero Addr means on-link.
	Gateway netip.Addr
}

// Pod is the network CNI set up in a pod's namespace: one interface,
// which the VM's virtio-net interface replaces.
type Pod struct {
	// NetNS is the namespace's path.
	NetNS string
	// Link is the CNI interface's name, e.g. eth0.
	Link string
	// MAC is its address; the guest's interface takes it over.
	MAC net.HardwareAddr
	// MTU is its MTU.
	MTU int
	// Addrs are its global addresses (IPv6 link-local ones are left out:
	// the guest makes its own).
	Addrs []netip.Prefix
	// Routes are the routes through it that have a gateway, and the
	// default routes.
	Routes []Route
	// DNS is the pod's resolver configuration, for the guest's
	// /etc/resolv.conf (not discovered: the caller sets it).
	DNS DNS
}

// handleAt opens a route netlink socket in the namespace at path.
func handleAt(path string) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrNamespace, path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("%w %s: netlink: %w", ErrNamespace, path, err)
	}
	return h, nil
}

// Discover reads the CNI interface in the namespace at path: the one link
// that is neither loopback nor a TAP. It returns nil (and no error) for a
// namespace with only loopback, and ErrNoInterface if there are several
// candidates.
func Discover(path string) (*Pod, error) {
	h, err := handleAt(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("%w %s: list links: %w", ErrNamespace, path, err)
	}
	var cands []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || l.Type() == "tuntap" {
			continue
		}
		cands = append(cands, l)
	}
	switch len(cands) {
	case 0:
		return nil, nil
	case 1:
	default:
		var names []string
		for _, l := range cands {
			names = append(names, l.Attrs().Name)
		}
		return nil, fmt.Errorf("%w: %s has %d interfaces (%s); ember hands exactly one to the VM", ErrNoInterface, path, len(cands), strings.Join(names, ", "))
	}
	l := cands[0]
	p := &Pod{NetNS: path, Link: l.Attrs().Name, MAC: l.Attrs().HardwareAddr, MTU: l.Attrs().MTU}
	if len(p.MAC) != 6 {
		return nil, fmt.Errorf("%w: %s in %s has no Ethernet address", ErrNoInterface, p.Link, path)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("%w %s: addresses of %s: %w", ErrNamespace, path, p.Link, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || ip.Is6() && ip.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		p.Addrs = append(p.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	routes, err := h.RouteList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("%w %s: routes of %s: %w", ErrNamespace, path, p.Link, err)
	}
	for _, r := range routes {
		var rt Route
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			rt.Gateway = gw.Unmap()
		}
		if r.Dst != nil {
			ip, _ := netip.AddrFromSlice(r.Dst.IP)
			ones, _ := r.Dst.Mask.Size()
			rt.Dst = netip.PrefixFrom(ip.Unmap(), ones)
			if ones == 0 {
				rt.Dst = netip.Prefix{}
			}
		}
		if !rt.Gateway.IsValid() && rt.Dst.IsValid() {
			continue // on-link: the address's prefix makes it in the guest
		}
		p.Routes = append(p.Routes, rt)
	}
	return p, nil
}

// Request is the agent's ConfigureNetwork request that gives the guest's
// interface (whose MAC is p.MAC) the pod's addresses and routes, and the
// guest its DNS settings.
func (p *Pod) Request() *api.ConfigureNetworkRequest {
	mac := p.MAC.String()
	itf := &api.Interface{Mac: mac, Mtu: uint32(p.MTU)}
	for _, a := range p.Addrs {
		itf.Addresses = append(itf.Addresses, a.String())
	}
	req := &api.ConfigureNetworkRequest{Interfaces: []*api.Interface{itf}}
	for _, r := range p.Routes {
		rt := &api.Route{Destination: "default", Mac: mac}
		if r.Dst.IsValid() {
			rt.Destination = r.Dst.String()
		}
		if r.Gateway.IsValid() {
			rt.Gateway = r.Gateway.String()
		}
		req.Routes = append(req.Routes, rt)
	}
	for _, s := range p.DNS.Servers {
		req.DnsServers = append(req.DnsServers, s.String())
	}
	req.DnsSearch, req.DnsOptions = p.DNS.Search, p.DNS.Options
	return req
}
