// Package shim tests containerd-shim-ember-v2 end to end: a real
// containerd 2.4 (built by scripts/containerd-setup.sh) runs containers
// through the shim in ember VMs. The TestNative* tests need a KVM that runs
// guest kernels, so on this project's hosts they run in the nested lab
// (docs/testing.md).
package shim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
)

// Fixture paths in L1 (or, natively, on the host).
var (
	kernelPath = "/fixtures/shim/vmlinux"
	initrdPath = "/fixtures/shim/agent.cpio.gz"
	binDir     = "/fixtures/shim/bin" // containerd, ctr, crictl, containerd-shim-ember-v2
	cniBinDir  = "/opt/cni/bin"       // bridge, host-local, loopback
	mkfsPath   = "/sbin/mkfs.ext4"
)

func TestMain(m *testing.M) {
	if labtest.InLab() {
		labtest.Main(m)
		return
	}
	dir, err := os.MkdirTemp("", "ember-shim-e2e-")
	var files []lab.File
	if err == nil {
		files, err = buildFixtures(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "shim e2e: fixtures:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if native, _ := labtest.NativeKVM(); native && os.Getenv(labtest.ModeEnv) != "force" {
		files = nil
	}
	code := labtest.Run(m, labtest.WithFiles(files...), labtest.WithConfig(func(c *lab.Config) {
		// containerd, its content store and snapshots, and a 256 MiB VM.
		c.MemoryMiB = max(c.MemoryMiB, 3072)
		// The CNI bridge plugin's bridge and veth, and the shim's tc
		// redirects (a host loads these on demand; L1 has no modprobe).
		c.Modules = append(c.Modules, "bridge", "veth", "sch_ingress", "cls_u32", "act_mirred")
	}))
	os.RemoveAll(dir)
	os.Exit(code)
}

func buildFixtures(dir string) ([]lab.File, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	kdir, err := fixtures.Kernel(ctx)
	if err != nil {
		return nil, err
	}
	kernelPath = filepath.Join(kdir, "vmlinux")
	if initrdPath, err = fixtures.AgentInitrd(ctx, dir); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(fixtures.RepoRoot(), "scripts", "containerd-setup.sh")).Output()
	if err != nil {
		return nil, fmt.Errorf("scripts/containerd-setup.sh: %w", err)
	}
	cdBin := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(cdBin, '\n'); i >= 0 {
		cdBin = cdBin[i+1:]
	}
	shimBin := filepath.Join(dir, "containerd-shim-ember-v2")
	if err := fixtures.GoBuild(ctx, "./cmd/containerd-shim-ember-v2", shimBin); err != nil {
		return nil, err
	}
	binDir = dir
	files := []lab.File{
		{HostPath: kernelPath, GuestPath: "/fixtures/shim/vmlinux"},
		{HostPath: initrdPath, GuestPath: "/fixtures/shim/agent.cpio.gz"},
		{HostPath: shimBin, GuestPath: "/fixtures/shim/bin/containerd-shim-ember-v2"},
		{HostPath: filepath.Join(cdBin, "containerd"), GuestPath: "/fixtures/shim/bin/containerd"},
		{HostPath: filepath.Join(cdBin, "ctr"), GuestPath: "/fixtures/shim/bin/ctr"},
		{HostPath: filepath.Join(cdBin, "crictl"), GuestPath: "/fixtures/shim/bin/crictl"},
		{HostPath: mkfsPath, GuestPath: mkfsPath},
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		files = append(files, lab.File{HostPath: filepath.Join(cdBin, "cni", p), GuestPath: filepath.Join(cniBinDir, p)})
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		files = append(files, lab.File{HostPath: "/etc/mke2fs.conf", GuestPath: "/etc/mke2fs.conf"})
	}
	// Natively the binaries are used from where they are.
	cniBinDir = filepath.Join(cdBin, "cni")
	for _, b := range []string{"containerd", "ctr", "crictl"} {
		if err := os.Symlink(filepath.Join(cdBin, b), filepath.Join(dir, b)); err != nil {
			return nil, err
		}
	}
	return files, nil
}
