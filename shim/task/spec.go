package task

import (
	"encoding/json"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// podContext is what a container's guest spec takes from its pod's VM.
type podContext struct {
	// Hostname is the pod's hostname (its first container's, the CRI's
	// sandbox). A container that joins another's UTS namespace by path,
	// as the CRI's containers join the sandbox's, gets it in its own.
	Hostname string
	// ResolvConf is the guest file the agent wrote from the pod's DNS
	// settings ("" if none): a bind of /etc/resolv.conf binds it instead.
	ResolvConf string
}

// Files the CRI binds into a pod's containers.
const (
	devShm     = "/dev/shm"
	resolvConf = "/etc/resolv.conf"
)

// guestSpec adapts a container's OCI spec (written for the host) to the
// guest: the root comes from the rootfs drive, host paths do not exist in
// the VM, and the guest's cgroup hierarchy is the agent's. A bind mount of
// a host /dev/shm (the CRI's pod shm) becomes a tmpfs of the container's
// own, and one of /etc/resolv.conf binds the guest's (pod.ResolvConf). It
// returns the JSON for the agent and what was dropped or replaced (for the
// log).
func guestSpec(s *specs.Spec, pod podContext) ([]byte, []string, error) {
	g := *s
	var dropped []string
	if g.Hostname == "" && joinsUTS(s) {
		g.Hostname = pod.Hostname
	}
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
		case isBind(m) && m.Destination == devShm:
			// The CRI binds the pod's shm tmpfs from the host; the guest
			// gets a tmpfs per container (not shared within the pod yet).
			g.Mounts = append(g.Mounts, shmMount(m))
			dropped = append(dropped, m.Destination+" (bind "+m.Source+", a tmpfs instead)")
		case isBind(m) && m.Destination == resolvConf && pod.ResolvConf != "":
			m.Source = pod.ResolvConf
			g.Mounts = append(g.Mounts, m)
		case isBind(m):
			// Host files (hosts, hostname, volumes) are not in the VM;
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

// joinsUTS reports whether the spec joins an existing UTS namespace (by
// path): its hostname is that namespace's.
func joinsUTS(s *specs.Spec) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UTSNamespace && ns.Path != "" {
			return true
		}
	}
	return false
}

// bindSource returns the host path bound at dest by the spec, or "".
func bindSource(s *specs.Spec, dest string) string {
	for _, m := range s.Mounts {
		if isBind(m) && m.Destination == dest {
			return m.Source
		}
	}
	return ""
}

// shmMount is the guest's tmpfs for a /dev/shm bind mount: the CRI's
// default size (64 MiB), read-only if the bind was.
func shmMount(bind specs.Mount) specs.Mount {
	opts := []string{"nosuid", "nodev", "noexec", "mode=1777", "size=65536k"}
	if slices.Contains(bind.Options, "ro") {
		opts = append(opts, "ro")
	}
	return specs.Mount{Destination: devShm, Type: "tmpfs", Source: "shm", Options: opts}
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
