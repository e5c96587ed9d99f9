package task

import (
	"encoding/json"
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
	b, dropped, err := guestSpec(in)
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
