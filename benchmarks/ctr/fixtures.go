package ctrbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
)

// ErrRunc means runc is not installed (apt-get install runc).
var ErrRunc = errors.New("ctrbench: runc not found (apt-get install runc)")

// Where the fixtures go in L1.
const (
	labDir    = "/ctrbench"
	labBinDir = labDir + "/bin"
)

// LabPaths are the run's paths inside L1 (ember is the lab's /bin/ember).
var LabPaths = Paths{
	Ember:   lab.GuestEmber,
	Kernel:  labDir + "/vmlinux",
	Initrd:  labDir + "/agent.cpio.gz",
	BinDir:  labBinDir,
	Busybox: "/bin/busybox",
}

// Fixtures builds (or finds cached) everything a run needs on this host,
// in dir: the guest kernel, the agent initramfs, containerd 2.4 and ctr
// (scripts/containerd-setup.sh), ember and its shim (static), and runc if
// withRunc. It
// returns the host paths, with BinDir a directory of links in dir, and the
// files to copy into L1 for LabPaths. It needs the repository and Go.
func Fixtures(ctx context.Context, dir string, withRunc bool) (Paths, []lab.File, error) {
	var p Paths
	kdir, err := fixtures.Kernel(ctx)
	if err != nil {
		return p, nil, err
	}
	p.Kernel = filepath.Join(kdir, "vmlinux")
	if p.Initrd, err = fixtures.AgentInitrd(ctx, dir); err != nil {
		return p, nil, err
	}
	out, err := exec.CommandContext(ctx, filepath.Join(fixtures.RepoRoot(), "scripts", "containerd-setup.sh")).Output()
	if err != nil {
		return p, nil, fmt.Errorf("ctrbench: scripts/containerd-setup.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	cdBin := lines[len(lines)-1]
	p.BinDir = filepath.Join(dir, "bin")
	if err := os.MkdirAll(p.BinDir, 0o755); err != nil {
		return p, nil, err
	}
	if err := fixtures.GoBuild(ctx, "./cmd/containerd-shim-ember-v2", filepath.Join(p.BinDir, "containerd-shim-ember-v2")); err != nil {
		return p, nil, err
	}
	p.Ember = filepath.Join(p.BinDir, "ember")
	if err := fixtures.GoBuild(ctx, "./cmd/ember", p.Ember); err != nil {
		return p, nil, err
	}
	bins := map[string]string{}
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		bins[b] = filepath.Join(cdBin, b)
	}
	if withRunc {
		runc, err := exec.LookPath("runc")
		if err != nil {
			return p, nil, ErrRunc
		}
		bins["runc"] = runc
	}
	for b, src := range bins {
		if err := os.Symlink(src, filepath.Join(p.BinDir, b)); err != nil {
			return p, nil, err
		}
	}
	p.Busybox = fixtures.Busybox
	files := []lab.File{
		{HostPath: p.Kernel, GuestPath: LabPaths.Kernel},
		{HostPath: p.Initrd, GuestPath: LabPaths.Initrd},
		{HostPath: filepath.Join(p.BinDir, "containerd-shim-ember-v2"), GuestPath: labBinDir + "/containerd-shim-ember-v2"},
		// mkfs.ext4 builds the containers' rootfs images in the shim.
		{HostPath: "/sbin/mkfs.ext4", GuestPath: "/sbin/mkfs.ext4"},
	}
	for b, src := range bins {
		files = append(files, lab.File{HostPath: src, GuestPath: labBinDir + "/" + b})
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		files = append(files, lab.File{HostPath: "/etc/mke2fs.conf", GuestPath: "/etc/mke2fs.conf"})
	}
	return p, files, nil
}
