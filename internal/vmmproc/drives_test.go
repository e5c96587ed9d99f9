package vmmproc

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/kvm"
)

// TestDriveAPI drives the spare slots of an unstarted Linux VM (built, not
// run: the host's KVM cannot run guest kernels) through the real API over
// its Unix socket.
func TestDriveAPI(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	kdir, err := fixtures.Kernel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "rootfs.ext4")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	vm, err := boot.Build(ctx, sys, boot.Config{
		Kernel: filepath.Join(kdir, "vmlinux"), MemoryMiB: 64, VCPUs: 1, SpareDrives: 2,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	inst := New("vm1", vm.Machine, "boot", Hooks{Drives: vm})

	sock := filepath.Join(dir, "api.sock")
	l, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("API socket mode %v, %v", fi.Mode(), err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- api.Serve(sctx, l, inst, slog.Default()) }()
	defer func() { stop(); <-done }()
	c := api.NewClient(sock)
	defer c.Close()

	ds, err := c.Drives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []api.DriveSlot{{Slot: 0, ID: boot.SpareDriveID(0)}, {Slot: 1, ID: boot.SpareDriveID(1)}}
	if !reflect.DeepEqual(ds, want) {
		t.Fatalf("drives %+v", ds)
	}
	if err := c.AttachDrive(ctx, 1, api.DriveRequest{Path: img}); err != nil {
		t.Fatal(err)
	}
	want[1].Path, want[1].Sectors = img, 2048
	if ds, _ := c.Drives(ctx); !reflect.DeepEqual(ds, want) {
		t.Fatalf("drives after attach %+v", ds)
	}

	status := func(err error) int {
		var ae *api.APIError
		if errors.As(err, &ae) {
			return ae.Status
		}
		t.Fatalf("not an API error: %v", err)
		return 0
	}
	for _, tt := range []struct {
		name string
		err  error
		want int
	}{
		{"busy slot", c.AttachDrive(ctx, 1, api.DriveRequest{Path: img}), http.StatusConflict},
		{"unknown slot", c.AttachDrive(ctx, 7, api.DriveRequest{Path: img}), http.StatusNotFound},
		{"missing image", c.AttachDrive(ctx, 0, api.DriveRequest{Path: filepath.Join(dir, "nope")}), http.StatusBadRequest},
		{"directory", c.AttachDrive(ctx, 0, api.DriveRequest{Path: dir, ReadOnly: true}), http.StatusBadRequest},
		{"no path", c.AttachDrive(ctx, 0, api.DriveRequest{}), http.StatusBadRequest},
		{"negative slot", c.AttachDrive(ctx, -1, api.DriveRequest{Path: img}), http.StatusBadRequest},
		{"detach empty", c.DetachDrive(ctx, 0), http.StatusConflict},
		{"detach unknown", c.DetachDrive(ctx, 2), http.StatusNotFound},
	} {
		if got := status(tt.err); got != tt.want {
			t.Errorf("%s: status %d (%v), want %d", tt.name, got, tt.err, tt.want)
		}
	}
	if err := c.DetachDrive(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if ds, _ := c.Drives(ctx); ds[1].Path != "" || ds[1].Sectors != 0 {
		t.Fatalf("drives after detach %+v", ds)
	}

	// A VM without spare slots (a test guest) says so.
	none := New("x", vm.Machine, "boot", Hooks{})
	if err := none.AttachDrive(ctx, 0, api.DriveRequest{Path: img}); !errors.Is(err, api.ErrUnsupported) {
		t.Errorf("attach without slots: %v", err)
	}
	if ds, err := none.Drives(ctx); err != nil || len(ds) != 0 {
		t.Errorf("drives without slots: %v %v", ds, err)
	}
}
