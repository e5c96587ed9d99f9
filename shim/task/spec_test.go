package task

import (
	"encoding/json"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestGuestSpec(t *testing.T) {
	in := &specs.Spec{
		Root:  &specs.Root{Path: "rootfs", Readonly: true},
		Hooks: &specs.Hooks{Prestart: []specs.Hook{{Path: "/usr/bin/hook"}}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup"},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/x/hosts", Options: []string{"rbind", "ro"}},
			{Destination: "/data", Source: "/srv", Options: []string{"rbind"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/default/c1",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/var/run/netns/x"},
				{Type: specs.MountNamespace}, {Type: specs.IPCNamespace, Path: "/proc/1/ns/ipc"},
			},
			Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActErrno},
		},
	}
	b, dropped, err := guestSpec(in, podContext{})
	if err != nil {
		t.Fatal(err)
	}
	var g specs.Spec
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if g.Root.Path != "" || !g.Root.Readonly {
		t.Errorf("root %+v", g.Root)
	}
	if g.Hooks != nil || g.Linux.Seccomp != nil || g.Linux.CgroupsPath != "" {
		t.Errorf("host-only fields kept: hooks %v seccomp %v cgroups %q", g.Hooks, g.Linux.Seccomp, g.Linux.CgroupsPath)
	}
	var dests []string
	for _, m := range g.Mounts {
		dests = append(dests, m.Destination)
	}
	if len(dests) != 2 || dests[0] != "/proc" || dests[1] != "/dev" {
		t.Errorf("mounts %v, want [/proc /dev]", dests)
	}
	if len(dropped) != 3 {
		t.Errorf("dropped %v", dropped)
	}
	if len(g.Linux.Namespaces) != 2 {
		t.Errorf("namespaces %+v, want pid and mount", g.Linux.Namespaces)
	}
	if in.Root.Path != "rootfs" || len(in.Mounts) != 5 || in.Linux.CgroupsPath == "" {
		t.Error("guestSpec modified its input")
	}
}

// TestGuestSpecPod: what a pod's container takes from the pod's VM. The
// CRI's bind of the pod's /dev/shm becomes a tmpfs (read-only if the bind
// was), a bind of /etc/resolv.conf binds the guest's if the VM got the
// pod's DNS settings, other binds are dropped; a container joining the
// sandbox's UTS namespace gets the pod's hostname.
func TestGuestSpecPod(t *testing.T) {
	pod := podContext{Hostname: "pod-1", ResolvConf: "/etc/resolv.conf"}
	joinUTS := &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.UTSNamespace, Path: "/proc/9/ns/uts"}}}
	newUTS := &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.UTSNamespace}}}
	for _, tc := range []struct {
		name         string
		pod          podContext
		spec         specs.Spec
		want         *specs.Mount // the guest mount; nil: dropped
		wantHostname string
	}{
		{"sandbox shm", pod,
			specs.Spec{Hostname: "own", Linux: newUTS, Mounts: []specs.Mount{{Destination: "/dev/shm", Type: "bind", Source: "/run/cri/x/shm", Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}}}},
			&specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=65536k", "ro"}}, "own"},
		{"container shm", pod,
			specs.Spec{Linux: joinUTS, Mounts: []specs.Mount{{Destination: "/dev/shm", Type: "bind", Source: "/run/cri/x/shm", Options: []string{"rbind", "rw"}}}},
			&specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=65536k"}}, "pod-1"},
		{"shm bind option", podContext{},
			specs.Spec{Mounts: []specs.Mount{{Destination: "/dev/shm", Source: "/dev/shm", Options: []string{"rbind"}}}},
			&specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "nodev", "noexec", "mode=1777", "size=65536k"}}, ""},
		{"shm tmpfs kept", podContext{},
			specs.Spec{Mounts: []specs.Mount{{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"size=1m"}}}},
			&specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"size=1m"}}, ""},
		{"resolv.conf", pod,
			specs.Spec{Linux: joinUTS, Mounts: []specs.Mount{{Destination: "/etc/resolv.conf", Type: "bind", Source: "/var/lib/cri/x/resolv.conf", Options: []string{"rbind", "rprivate", "ro"}}}},
			&specs.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: "/etc/resolv.conf", Options: []string{"rbind", "rprivate", "ro"}}, "pod-1"},
		{"resolv.conf without pod DNS", podContext{Hostname: "pod-1"},
			specs.Spec{Mounts: []specs.Mount{{Destination: "/etc/resolv.conf", Type: "bind", Source: "/var/lib/cri/x/resolv.conf"}}},
			nil, ""},
		{"hosts", pod,
			specs.Spec{Linux: joinUTS, Hostname: "set", Mounts: []specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/cri/x/hosts"}}},
			nil, "set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, dropped, err := guestSpec(&tc.spec, tc.pod)
			if err != nil {
				t.Fatal(err)
			}
			var g specs.Spec
			if err := json.Unmarshal(b, &g); err != nil {
				t.Fatal(err)
			}
			if g.Hostname != tc.wantHostname {
				t.Errorf("hostname %q, want %q", g.Hostname, tc.wantHostname)
			}
			if tc.want == nil {
				if len(g.Mounts) != 0 || len(dropped) != 1 {
					t.Errorf("mounts %+v dropped %v, want it dropped", g.Mounts, dropped)
				}
				return
			}
			if len(g.Mounts) != 1 {
				t.Fatalf("mounts %+v", g.Mounts)
			}
			m := g.Mounts[0]
			if m.Destination != tc.want.Destination || m.Type != tc.want.Type || m.Source != tc.want.Source || !slices.Equal(m.Options, tc.want.Options) {
				t.Errorf("guest mount %+v, want %+v", m, *tc.want)
			}
		})
	}
}
