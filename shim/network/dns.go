package network

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
)

// DNS is a pod's resolver configuration: what its resolv.conf says (the
// CRI writes one per pod from the pod's DNS config).
type DNS struct {
	Servers []netip.Addr
	Search  []string
	Options []string
}

// ParseResolvConf reads the nameserver, search (or domain) and options
// lines of a resolv.conf; other lines, comments and nameservers that are
// no IP address are skipped.
func ParseResolvConf(b []byte) DNS {
	var d DNS
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line, _, _ = strings.Cut(line, ";")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if ip, err := netip.ParseAddr(f[1]); err == nil {
				d.Servers = append(d.Servers, ip)
			}
		case "search", "domain":
			// The last of these lines wins (resolv.conf(5)).
			d.Search = append([]string(nil), f[1:]...)
		case "options":
			d.Options = append(d.Options, f[1:]...)
		}
	}
	return d
}
