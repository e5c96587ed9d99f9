package boot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/kvm"
)

// TestSpareDrives builds an unstarted VM with two spare slots, attaches an
// image to one, snapshots it and restores it: the empty slot comes back
// empty and takes an image after the restore, the attached one comes back
// attached.
func TestSpareDrives(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx := context.Background()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := filepath.Join(dir, "data.img")
	for _, p := range []string{img, data} {
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vm, err := Build(ctx, sys, Config{
		Kernel: kernelPath, Initrd: initrdPath, MemoryMiB: 64, VCPUs: 1, Cmdline: "-- true",
		Drives: []Drive{{Path: img, ID: "root"}}, SpareDrives: 2, RNG: true,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	empty := []SpareDrive{{Slot: 0, ID: SpareDriveID(0)}, {Slot: 1, ID: SpareDriveID(1)}}
	if got := vm.SpareDrives(); !reflect.DeepEqual(got, empty) {
		t.Fatalf("spare drives %+v", got)
	}
	if len(vm.devices) != 4 || vm.devices[1].kind != "block" || vm.devices[2].kind != "block" {
		t.Fatalf("devices %d", len(vm.devices))
	}

	for _, tt := range []struct {
		name string
		slot int
		path string
		want error
	}{
		{"unknown slot", 2, data, ErrNoSuchSlot},
		{"negative slot", -1, data, ErrNoSuchSlot},
		{"missing image", 0, filepath.Join(dir, "nope.img"), fs.ErrNotExist},
		{"directory", 0, dir, block.ErrConfig},
	} {
		if err := vm.AttachDrive(ctx, tt.slot, tt.path, true); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := vm.DetachDrive(ctx, 0); !errors.Is(err, block.ErrEmpty) {
		t.Errorf("detach of an empty slot: %v", err)
	}
	if err := vm.AttachDrive(ctx, 1, data, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.AttachDrive(ctx, 1, data, false); !errors.Is(err, block.ErrBusy) {
		t.Errorf("attach to a busy slot: %v", err)
	}
	want := []SpareDrive{empty[0], {Slot: 1, ID: SpareDriveID(1), Path: data, ReadOnly: true, Sectors: 2048}}
	if got := vm.SpareDrives(); !reflect.DeepEqual(got, want) {
		t.Fatalf("after attach: %+v", got)
	}

	snapDir := filepath.Join(dir, "snap")
	if _, _, err := vm.Snapshot(ctx, snapDir, SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := Restore(ctx, sys, snapDir, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.SpareDrives(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored spare drives %+v, want %+v", got, want)
	}
	if r.cfg.SpareDrives != 2 || len(r.cfg.Drives) != 1 {
		t.Errorf("restored config: %d spares, %d drives", r.cfg.SpareDrives, len(r.cfg.Drives))
	}
	if err := r.AttachDrive(ctx, 0, img, false); err != nil {
		t.Fatalf("attach after restore: %v", err)
	}
	if err := r.DetachDrive(ctx, 1); err != nil {
		t.Fatalf("detach after restore: %v", err)
	}

	// An attached slot whose image is gone fails the restore clearly.
	os.Remove(data)
	if _, err := Restore(ctx, sys, snapDir, RestoreOptions{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("restore with the attached image gone: %v", err)
	}
}

func TestSpareDrivesConfig(t *testing.T) {
	for _, c := range []Config{
		{Kernel: "k", MemoryMiB: 64, VCPUs: 1, SpareDrives: -1},
		{Kernel: "k", MemoryMiB: 64, VCPUs: 1, SpareDrives: MaxSpareDrives + 1},
		{Kernel: "k", MemoryMiB: 64, VCPUs: 1, Drives: []Drive{{}}},
	} {
		if err := c.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("validate(%+v) = %v", c, err)
		}
	}
}
