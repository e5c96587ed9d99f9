package network

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseResolvConf(t *testing.T) {
	for _, tc := range []struct {
		name            string
		in              string
		servers         []string
		search, options []string
	}{
		{"empty", "", nil, nil, nil},
		{"cri", "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
			[]string{"10.96.0.10"}, []string{"default.svc.cluster.local", "svc.cluster.local"}, []string{"ndots:5"}},
		{"comments and v6", "# generated\nnameserver 10.0.0.1 # primary\n; old\nnameserver fd00::53\nnameserver bogus\n",
			[]string{"10.0.0.1", "fd00::53"}, nil, nil},
		{"last search wins", "domain a.example\nsearch b.example c.example\noptions a\noptions b:1 c\n",
			nil, []string{"b.example", "c.example"}, []string{"a", "b:1", "c"}},
		{"incomplete lines", "nameserver\nsearch\noptions\nsortlist 10.0.0.0/8\n", nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := ParseResolvConf([]byte(tc.in))
			var servers []string
			for _, s := range d.Servers {
				servers = append(servers, s.String())
			}
			if !slices.Equal(servers, tc.servers) || !slices.Equal(d.Search, tc.search) || !slices.Equal(d.Options, tc.options) {
				t.Errorf("got servers %q search %q options %q, want %q %q %q", servers, d.Search, d.Options, tc.servers, tc.search, tc.options)
			}
		})
	}
}

// TestRequestDNS: the pod's DNS settings go into ConfigureNetwork.
func TestRequestDNS(t *testing.T) {
	p := &Pod{MAC: []byte{2, 0, 0, 0, 0, 1}, MTU: 1500,
		DNS: DNS{Servers: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, Search: []string{"svc.cluster.local"}, Options: []string{"ndots:5"}}}
	req := p.Request()
	if !slices.Equal(req.DnsServers, []string{"10.96.0.10"}) || !slices.Equal(req.DnsSearch, []string{"svc.cluster.local"}) ||
		!slices.Equal(req.DnsOptions, []string{"ndots:5"}) {
		t.Errorf("request DNS %q %q %q", req.DnsServers, req.DnsSearch, req.DnsOptions)
	}
	if req := (&Pod{MAC: p.MAC}).Request(); req.DnsServers != nil || req.DnsSearch != nil || req.DnsOptions != nil {
		t.Errorf("no DNS gave %q %q %q", req.DnsServers, req.DnsSearch, req.DnsOptions)
	}
}
