package boot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/vmm/devices/serial"
	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
	"github.com/embervm/ember/vmm/kvm"
)

// buildUnstarted builds a Linux VM with a drive, vsock and rng that never
// runs (the host's KVM cannot run guest kernels): enough to check that a
// snapshot records every device and that a restore rebuilds them.
func buildUnstarted(t *testing.T, sys *kvm.System, dirtyLog bool) (*VM, string) {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	vm, err := Build(context.Background(), sys, Config{
		Kernel: kernelPath, Initrd: initrdPath, MemoryMiB: 64, VCPUs: 2, DirtyLog: dirtyLog,
		Cmdline: "-- true",
		Drives:  []Drive{{Path: img, ID: "data", ReadOnly: true}},
		Vsock:   &Vsock{GuestCID: 7, UDS: filepath.Join(dir, "v.sock")},
		RNG:     true,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	return vm, dir
}

func transportStates(t *testing.T, v *VM) []mmio.State {
	t.Helper()
	var out []mmio.State
	for _, a := range v.devices {
		a.tr.Pause()
		st, err := a.tr.State()
		a.tr.Resume()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}

// TestSnapshotRestoreDevices saves an unstarted Linux VM and restores it
// with every backend: the machine description, the serial port (with
// bytes in its receive FIFO), the transports and the device models come
// back, with the drive path and vsock socket overridden.
func TestSnapshotRestoreDevices(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx := context.Background()
	vm, dir := buildUnstarted(t, sys, false)
	if _, err := vm.Serial.Enqueue([]byte("typed ahead")); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dir, "snap")
	st, _, err := vm.Snapshot(ctx, snapDir, SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.CPU.Vendor != "GenuineIntel" && st.CPU.Vendor != "AuthenticAMD" && st.CPU.Vendor != "HygonGenuine" {
		t.Errorf("snapshot CPU vendor %q", st.CPU.Vendor)
	}
	var names []string
	for _, d := range st.Devices {
		names = append(names, d.Name)
	}
	if want := []string{MachineBlob, SerialBlob, "virtio.0", "virtio.1", "virtio.2"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("device blobs %q, want %q", names, want)
	}
	wantSerial := vm.Serial.Save()
	wantTr := transportStates(t, vm)
	// The original VM keeps its vsock socket; the restores get new ones
	// and a copy of the image.
	img2 := filepath.Join(dir, "disk2.img")
	if err := os.WriteFile(img2, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, b := range snapshot.Backends {
		t.Run(string(b), func(t *testing.T) {
			uds := filepath.Join(dir, string(b)+".sock")
			r, err := Restore(ctx, sys, snapDir, RestoreOptions{Backend: b, DrivePaths: []string{img2}, VsockUDS: uds})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if r.Cmdline != vm.Cmdline || len(r.VCPUs()) != 2 || r.Memory.Guest().Size() != vm.Memory().Size() {
				t.Errorf("restored machine: cmdline %q, %d vCPUs, %d bytes", r.Cmdline, len(r.VCPUs()), r.Memory.Guest().Size())
			}
			if got := r.Serial.Save(); !reflect.DeepEqual(got, wantSerial) {
				t.Errorf("serial state %+v, want %+v", got, wantSerial)
			}
			if got := transportStates(t, r.VM); !reflect.DeepEqual(got, wantTr) {
				t.Errorf("transport states %+v, want %+v", got, wantTr)
			}
			kinds := []string{}
			for _, a := range r.devices {
				kinds = append(kinds, a.kind)
			}
			if !reflect.DeepEqual(kinds, []string{"block", "vsock", "rng"}) {
				t.Fatalf("restored devices %q", kinds)
			}
			if bd := r.devices[0].dev.(*block.Device); bd.State().Config.Path != img2 || !bd.State().Config.ReadOnly || bd.State().Config.ID != "data" {
				t.Errorf("block state %+v", bd.State())
			}
			if vd := r.devices[1].dev.(*vsock.Device); vd.CID() != 7 || vd.UDSPath() != uds {
				t.Errorf("vsock CID %d at %s", vd.CID(), vd.UDSPath())
			}
			if _, err := os.Stat(uds); err != nil {
				t.Errorf("restored vsock does not listen: %v", err)
			}
			// The restored VM records what it was restored with, so a
			// snapshot of it restores too.
			if r.cfg.Drives[0].Path != img2 || r.cfg.Vsock.UDS != uds || !r.cfg.RNG {
				t.Errorf("restored config %+v", r.cfg)
			}
			if _, _, err := r.Snapshot(ctx, filepath.Join(dir, "again-"+string(b)), SnapshotOptions{}); err != nil {
				t.Errorf("snapshot of the restored VM: %v", err)
			}
		})
	}
}

// TestSnapshotRefusals: a diff of a VM with virtio devices, a restore of a
// snapshot without the machine description, a changed image size.
func TestSnapshotRefusals(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx := context.Background()
	vm, dir := buildUnstarted(t, sys, true)
	if _, _, err := vm.Snapshot(ctx, filepath.Join(dir, "d"), SnapshotOptions{Diff: true, Parent: snapshot.NewID()}); !errors.Is(err, ErrDiffWithVirtio) {
		t.Errorf("diff of a VM with virtio devices: %v, want ErrDiffWithVirtio", err)
	}
	// A plain machine snapshot (no boot blobs) is not a Linux snapshot.
	plain := filepath.Join(dir, "plain")
	if _, _, err := snapshot.Save(ctx, vm.Machine, plain, snapshot.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, sys, plain, RestoreOptions{}); !errors.Is(err, ErrSnapshot) {
		t.Errorf("restore of a snapshot without boot blobs: %v, want ErrSnapshot", err)
	}
	// A drive whose image changed size.
	snapDir := filepath.Join(dir, "snap")
	if _, _, err := vm.Snapshot(ctx, snapDir, SnapshotOptions{}); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small.img")
	if err := os.WriteFile(small, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, sys, snapDir, RestoreOptions{DrivePaths: []string{small}, VsockUDS: filepath.Join(dir, "x.sock")}); !errors.Is(err, block.ErrCapacityChanged) {
		t.Errorf("restore over a resized image: %v, want ErrCapacityChanged", err)
	}
	// The UART's state survives the JSON blob round trip exactly.
	var sst serial.State
	s, err := snapshot.Open(snapDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeBlob(s, SerialBlob, &sst); err != nil || !reflect.DeepEqual(sst, vm.Serial.Save()) {
		t.Errorf("serial blob %+v (%v), want %+v", sst, err, vm.Serial.Save())
	}
}
