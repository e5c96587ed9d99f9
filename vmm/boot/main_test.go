package boot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
)

// Fixture paths: on the host they are set by TestMain; in the lab the files
// are copied to these paths.
var (
	kernelPath = "/fixtures/vmlinux"
	initrdPath = "/fixtures/placeholder.cpio.gz"
)

func TestMain(m *testing.M) {
	if !labtest.InLab() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		dir, err := os.MkdirTemp("", "ember-boot-test-")
		if err == nil {
			var kdir string
			if kdir, err = fixtures.Kernel(ctx); err == nil {
				kernelPath = filepath.Join(kdir, "vmlinux")
				initrdPath, err = fixtures.PlaceholderInitrd(ctx, dir)
			}
		}
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "boot tests: fixtures:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		code := labtest.Run(m, labtest.WithFiles(
			lab.File{HostPath: kernelPath, GuestPath: "/fixtures/vmlinux"},
			lab.File{HostPath: initrdPath, GuestPath: "/fixtures/placeholder.cpio.gz"},
		))
		os.RemoveAll(dir)
		os.Exit(code)
	}
	labtest.Main(m)
}
