package task

import (
	"encoding/json"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// guestSpec adapts a container's OCI spec (written for the host) to the
// guest: the root comes from the rootfs drive, host paths do not exist in
// the VM, and the guest's cgroup hierarchy is the agent's. It returns the
// JSON for the agent and what was dropped (for the log).
func guestSpec(s *specs.Spec) ([]byte, []string, error) {
	g := *s
	var dropped []string
	if g.Root != nil {
		root := *g.Root
		root.Path = "" // the agent mounts the rootfs drive
		g.Root = &root
	}
	g.Hooks = nil // hooks would run host binaries
	g.Mounts = nil
	for _, m := range s.Mounts {
		switch {
		case m.Type == "cgroup" || m.Type == "cgroup2":
			// The guest has one cgroup2 hierarchy, run by the agent.
			dropped = append(dropped, m.Destination+" ("+m.Type+")")
		case isBind(m):
			// Host files (resolv.conf, hosts, volumes) are not in the VM;
			// sharing them is future work (docs/shim.md).
			dropped = append(dropped, m.Destination+" (bind "+m.Source+")")
		default:
			g.Mounts = append(g.Mounts, m)
		}
	}
	if s.Linux != nil {
		l := *s.Linux
		// Namespace paths name host namespaces; the agent makes its own.
		l.Namespaces = nil
		for _, ns := range s.Linux.Namespaces {
			if ns.Path == "" && ns.Type != specs.NetworkNamespace && ns.Type != specs.UserNamespace && ns.Type != specs.CgroupNamespace {
				l.Namespaces = append(l.Namespaces, ns)
			}
		}
		l.CgroupsPath = ""
		l.Seccomp = nil // not enforced in the guest yet (docs/agent.md)
		g.Linux = &l
	}
	b, err := json.Marshal(&g)
	if err != nil {
		return nil, nil, fmt.Errorf("encode guest spec: %w", err)
	}
	return b, dropped, nil
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" || m.Type == "rbind" {
		return true
	}
	for _, o := range m.Options {
		if o == "bind" || o == "rbind" {
			return true
		}
	}
	return false
}
