package agent

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/container"
	"github.com/embervm/ember/guest/identity"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// decodeJSON decodes a JSON field of a request, naming it in errors.
func decodeJSON(field string, data []byte, v any) error {
	if len(data) == 0 {
		return fmt.Errorf("%s is empty: %w", field, ErrBadRequest)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w: %w", field, ErrBadRequest, err)
	}
	return nil
}

func rootfsFromAPI(r *api.Rootfs) (container.Rootfs, error) {
	if r == nil || r.Source == "" {
		return container.Rootfs{}, fmt.Errorf("rootfs.source is empty: %w", ErrBadRequest)
	}
	var opts []string
	for _, o := range r.Options {
		opts = append(opts, strings.Split(o, ",")...)
	}
	return container.Rootfs{Source: r.Source, FSType: r.Fstype, Options: opts, Readonly: r.Readonly}, nil
}

func specFromAPI(data []byte) (*specs.Spec, error) {
	var s specs.Spec
	if err := decodeJSON("oci_spec", data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func networkFromAPI(req *api.ConfigureNetworkRequest) (identity.NetworkConfig, error) {
	var cfg identity.NetworkConfig
	for _, ifc := range req.Interfaces {
		mac, err := net.ParseMAC(ifc.Mac)
		if err != nil {
			return cfg, fmt.Errorf("interface mac %q: %w", ifc.Mac, identity.ErrInvalidNetwork)
		}
		addrs, err := identity.ParseCIDRs(ifc.Addresses)
		if err != nil {
			return cfg, err
		}
		cfg.Interfaces = append(cfg.Interfaces, identity.Interface{MAC: mac, Name: ifc.Name, Addresses: addrs, MTU: int(ifc.Mtu)})
	}
	for _, r := range req.Routes {
		var rt identity.Route
		if r.Destination != "" && r.Destination != "default" {
			_, dst, err := net.ParseCIDR(r.Destination)
			if err != nil {
				return cfg, fmt.Errorf("route destination %q: %w", r.Destination, identity.ErrInvalidNetwork)
			}
			rt.Dst = dst
		}
		if r.Gateway != "" {
			if rt.Gw = net.ParseIP(r.Gateway); rt.Gw == nil {
				return cfg, fmt.Errorf("route gateway %q: %w", r.Gateway, identity.ErrInvalidNetwork)
			}
		}
		if r.Mac != "" {
			mac, err := net.ParseMAC(r.Mac)
			if err != nil {
				return cfg, fmt.Errorf("route mac %q: %w", r.Mac, identity.ErrInvalidNetwork)
			}
			rt.MAC = mac
		}
		cfg.Routes = append(cfg.Routes, rt)
	}
	for _, s := range req.DnsServers {
		ip := net.ParseIP(s)
		if ip == nil {
			return cfg, fmt.Errorf("dns server %q: %w", s, identity.ErrInvalidNetwork)
		}
		cfg.DNS.Servers = append(cfg.DNS.Servers, ip)
	}
	cfg.DNS.Search = req.DnsSearch
	cfg.DNS.Options = req.DnsOptions
	return cfg, nil
}

func readSize(n uint32) int {
	switch {
	case n == 0:
		return api.DefaultReadBytes
	case n > api.MaxReadBytes:
		return api.MaxReadBytes
	}
	return int(n)
}
