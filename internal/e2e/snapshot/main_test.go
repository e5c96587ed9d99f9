package snapshot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embervm/ember/images/initramfs"
	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
)

// Fixture paths: set by TestMain on the host; in the lab the files are
// copied to these paths.
var (
	kernelPath = "/fixtures/vmlinux"
	initrdPath = "/fixtures/snapguest.cpio.gz"
)

// guestScript is the guest's workload (/run.sh, run by the placeholder
// init with the console as its terminal): a vsock echo server on port
// 5000, a ticker printing a counter and the uptime every second, and a
// console command loop: "p TOKEN" answers "pong:TOKEN:UPTIME", "x CMD"
// runs CMD and prints "xdone:STATUS". Terminal echo is off so that the
// input never shows on the output.
const guestScript = `#!/bin/sh
/bin/vsockecho 5000 &
(i=0; while true; do echo "tick:$i:$(cut -d' ' -f1 /proc/uptime)"; i=$((i+1)); sleep 1; done) &
stty -echo 2>/dev/null
echo READY
while read c a; do
	case "$c" in
	p) echo "pong:$a:$(cut -d' ' -f1 /proc/uptime)";;
	x) eval "$a"; echo "xdone:$?";;
	esac
done
`

var guestApplets = []string{"sh", "echo", "cat", "cut", "sleep", "stty", "dd", "md5sum", "mount", "ls", "true"}

func TestMain(m *testing.M) {
	if labtest.InLab() {
		labtest.Main(m)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	dir, err := os.MkdirTemp("", "ember-e2e-snapshot-")
	if err == nil {
		err = buildFixtures(ctx, dir)
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "snapshot e2e tests: fixtures:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := labtest.Run(m, labtest.WithFiles(
		lab.File{HostPath: kernelPath, GuestPath: "/fixtures/vmlinux"},
		lab.File{HostPath: initrdPath, GuestPath: "/fixtures/snapguest.cpio.gz"},
	))
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildFixtures finds (or builds) the guest kernel and writes the test
// initramfs: the placeholder init, busybox, vsockecho and /run.sh.
func buildFixtures(ctx context.Context, dir string) error {
	kdir, err := fixtures.Kernel(ctx)
	if err != nil {
		return err
	}
	kernelPath = filepath.Join(kdir, "vmlinux")
	initBin := filepath.Join(dir, "placeholder-init")
	if err := fixtures.GoBuild(ctx, "./images/placeholder-init", initBin); err != nil {
		return err
	}
	echoBin := filepath.Join(dir, "vsockecho")
	if err := fixtures.GoBuild(ctx, "./internal/e2e/snapshot/vsockecho", echoBin); err != nil {
		return err
	}
	if _, err := os.Stat(fixtures.Busybox); err != nil {
		return fmt.Errorf("%s missing (apt-get install busybox-static): %w", fixtures.Busybox, err)
	}
	spec := initramfs.Spec{
		Init: initramfs.File{Host: initBin},
		Files: []initramfs.File{
			{Guest: "/bin/busybox", Host: fixtures.Busybox, Mode: 0o755},
			{Guest: "/bin/vsockecho", Host: echoBin, Mode: 0o755},
			{Guest: "/run.sh", Data: []byte(guestScript), Mode: 0o755},
		},
	}
	for _, a := range guestApplets {
		spec.Symlinks = append(spec.Symlinks, initramfs.Symlink{Guest: "/bin/" + a, Target: "busybox"})
	}
	initrdPath = filepath.Join(dir, "snapguest.cpio.gz")
	return initramfs.WriteFile(initrdPath, spec, true)
}
