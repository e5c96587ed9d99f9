package network

import specs "github.com/opencontainers/runtime-spec/specs-go"

// NetNSFromSpec returns the path of the network namespace the container is
// to join (set by containerd's CNI setup or the CRI plugin), or "" if the
// spec asks for a new, empty one or none.
func NetNSFromSpec(s *specs.Spec) string {
	if s == nil || s.Linux == nil {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return ns.Path
		}
	}
	return ""
}
