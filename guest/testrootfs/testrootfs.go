// Package testrootfs builds a tiny container rootfs from the host's static
// busybox (Debian's busybox-static, installed by scripts/setup.sh) and
// minimal OCI specs for the agent's tests.
package testrootfs

import (
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Busybox is the static busybox the rootfs is made of.
const Busybox = "/bin/busybox"

// Build lays out busybox and its applet links in root.
func Build(root string) error {
	for _, d := range []string{"bin", "proc", "dev", "tmp", "etc", "data", "sys"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	bb, err := os.ReadFile(Busybox)
	if err != nil {
		return fmt.Errorf("%w (install busybox-static)", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), bb, 0o755); err != nil {
		return err
	}
	applets := []string{"sh", "echo", "cat", "sleep", "kill", "ls", "hostname", "seq", "head", "wc",
		"true", "false", "stty", "id", "ps", "yes", "printf", "env", "pwd", "grep", "touch", "test", "dd", "read", "tr"}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("image\n"), 0o644)
}

// Spec is a minimal OCI spec running args with the usual mounts: proc,
// a tmpfs /dev, devpts, a tmpfs /tmp; read-only root; hostname "ctr".
func Spec(args ...string) *specs.Spec {
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: "ctr",
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin", "HOME=/"},
			Cwd:  "/",
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		},
		Linux: &specs.Linux{
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/acpi"},
			ReadonlyPaths: []string{"/proc/sys"},
		},
	}
}
