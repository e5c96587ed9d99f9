package vm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/embervm/ember/shim/config"
	"github.com/embervm/ember/vmm/boot"
)

func TestSpareDriveLimit(t *testing.T) {
	if config.MaxSpareDrives != boot.MaxSpareDrives {
		t.Fatalf("config allows %d spare drives, vmm/boot %d", config.MaxSpareDrives, boot.MaxSpareDrives)
	}
}

func TestImageSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, make([]byte, 4096+100), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := imageSize(p); err != nil || n != 4096 {
		t.Fatalf("imageSize = %d, %v; want 4096 (whole sectors)", n, err)
	}
	if _, err := imageSize(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing image has a size")
	}
}
