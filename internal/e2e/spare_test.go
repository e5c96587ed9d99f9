package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/client"
	"github.com/embervm/ember/guest/testrootfs"
	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
	vmmapi "github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestNativeSpareDrives boots the agent as /init with two spare virtio-blk
// slots and no disk, then, with the VM running:
//   - the guest sees both slots as empty disks (WaitBlockDevice times out
//     saying the disk has 0 bytes);
//   - a copy of the busybox ext4 image attached to slot 1 becomes a disk of
//     its size, and a container runs from it (read-write);
//   - a raw data image attached to slot 0 reads back the right bytes in a
//     container (sha256 of the device, bind-mounted);
//   - slot 0 detached and attached to an image of another size shows the
//     new size and the new bytes.
func TestNativeSpareDrives(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	dir := t.TempDir()
	uds := filepath.Join(dir, "vsock.sock")
	v := startVM(t, ctx, boot.Config{
		Initrd: agentInitrd, SpareDrives: 2,
		Vsock:   &boot.Vsock{GuestCID: 3, UDS: uds},
		Cmdline: "quiet",
	})
	c, err := client.Dial(ctx, uds, api.DefaultVsockPort)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	for i := range 2 {
		_, err := c.WaitBlockDevice(ctx, &api.WaitBlockDeviceRequest{Serial: boot.SpareDriveID(i), TimeoutNs: uint64(300 * time.Millisecond)})
		if s, _ := status.FromError(err); s.Code() != codes.DeadlineExceeded || !strings.Contains(s.Message(), "has 0 bytes") {
			t.Fatalf("empty slot %d: %v, want a disk of 0 bytes", i, err)
		}
	}

	rootfs := copyFile(t, rootfsImage, filepath.Join(dir, "rootfs.ext4"))
	t0 := time.Now()
	if err := v.AttachDrive(ctx, 1, rootfs, false); err != nil {
		t.Fatal(err)
	}
	dev := waitDisk(t, ctx, c, 1, fileSize(t, rootfs))
	t.Logf("slot 1 is %s in the guest %v after the attach", dev, time.Since(t0).Round(time.Millisecond))
	rfs := &api.Rootfs{Source: dev, Fstype: "ext4"}
	// The slot is read-write: the container writes to its root.
	ws := testrootfs.Spec("sh", "-c", "echo from-slot > /written && cat /written /etc/hostname")
	ws.Root.Readonly = false
	out, code := runContainerSpec(t, ctx, c, "from-slot", rfs, ws, nil)
	if code != 0 || out != "from-slot\nimage\n" {
		t.Fatalf("container from the attached slot: %q, exit %d", out, code)
	}

	// A raw data disk in slot 0, read from a container through a bind
	// mount of its device node.
	readDisk := func(id string, size int64) string {
		t.Helper()
		node := waitDisk(t, ctx, c, 0, size)
		s := testrootfs.Spec("busybox", "sha256sum", "/disk")
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/disk", Type: "bind", Source: node, Options: []string{"bind", "ro"}})
		out, code := runContainerSpec(t, ctx, c, id, rfs, s, nil)
		if code != 0 {
			t.Fatalf("sha256sum of %s: %q, exit %d", node, out, code)
		}
		return strings.Fields(out)[0]
	}
	data1, sum1 := randomImage(t, filepath.Join(dir, "data1.img"), 1<<20)
	if err := v.AttachDrive(ctx, 0, data1, true); err != nil {
		t.Fatal(err)
	}
	if got := readDisk("read1", 1<<20); got != sum1 {
		t.Fatalf("guest read sha256 %s from slot 0, image has %s", got, sum1)
	}
	if err := v.DetachDrive(ctx, 0); err != nil {
		t.Fatal(err)
	}
	data2, sum2 := randomImage(t, filepath.Join(dir, "data2.img"), 2<<20)
	if err := v.AttachDrive(ctx, 0, data2, true); err != nil {
		t.Fatal(err)
	}
	if got := readDisk("read2", 2<<20); got != sum2 {
		t.Fatalf("after re-attach the guest read sha256 %s, image has %s", got, sum2)
	}
	if err := v.AttachDrive(ctx, 0, data1, true); err == nil {
		t.Error("attach to a busy slot succeeded")
	}

	if _, err := c.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	v.waitEnd(t, ctx)
}

// TestNativeSpareDrivesRestore snapshots an idle agent VM with two empty
// spare slots, restores it in an `ember vmm --restore` process (paused),
// attaches a rootfs image to a slot through the VMM API before resuming
// (as a pool claim would), and runs a container from it.
func TestNativeSpareDrivesRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	dir := t.TempDir()
	snapDir := snapshotAgentVM(t, ctx, dir, boot.Config{SpareDrives: 2})

	ember := lab.GuestEmber
	if !labtest.InLab() {
		ember = filepath.Join(dir, "ember")
		if err := fixtures.GoBuild(ctx, "./cmd/ember", ember); err != nil {
			t.Fatal(err)
		}
	}
	sock, uds2 := filepath.Join(dir, "api.sock"), filepath.Join(dir, "vsock2.sock")
	vc := startVMM(t, ctx, ember, sock, "--restore", snapDir, "--backend", "mmap", "--vsock-uds", uds2,
		"--console", filepath.Join(dir, "console2.log"))

	ds, err := vc.Drives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[0].Path != "" || ds[1].Path != "" || ds[0].Sectors != 0 || ds[0].ID != boot.SpareDriveID(0) {
		t.Fatalf("restored drive slots %+v, want two empty ones", ds)
	}
	rootfs := copyFile(t, rootfsImage, filepath.Join(dir, "rootfs.ext4"))
	if err := vc.AttachDrive(ctx, 0, vmmapi.DriveRequest{Path: rootfs}); err != nil {
		t.Fatal(err)
	}
	var ae *vmmapi.APIError
	if err := vc.AttachDrive(ctx, 0, vmmapi.DriveRequest{Path: rootfs}); !errors.As(err, &ae) || ae.Status != 409 {
		t.Errorf("attach to a busy slot: %v, want 409", err)
	}
	if err := vc.AttachDrive(ctx, 5, vmmapi.DriveRequest{Path: rootfs}); !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("attach to slot 5: %v, want 404", err)
	}
	if err := vc.Action(ctx, vmmapi.ActionResume); err != nil {
		t.Fatal(err)
	}
	c2, err := client.Dial(ctx, uds2, api.DefaultVsockPort)
	if err != nil {
		t.Fatalf("dial the restored agent: %v", err)
	}
	defer c2.Close()
	if _, err := c2.SetTime(ctx, &api.SetTimeRequest{UnixNano: time.Now().UnixNano()}); err != nil {
		t.Fatal(err)
	}
	dev := waitDisk(t, ctx, c2, 0, fileSize(t, rootfs))
	out, code := runContainer(t, ctx, c2, "restored-slot", &api.Rootfs{Source: dev, Fstype: "ext4"}, "sh", "-c", "echo restored-slot")
	if out != "restored-slot\n" || code != 0 {
		t.Fatalf("container from the slot attached after restore: %q, exit %d", out, code)
	}
	// The other slot is still empty and can be attached while running.
	data, sum := randomImage(t, filepath.Join(dir, "data.img"), 1<<20)
	if err := vc.AttachDrive(ctx, 1, vmmapi.DriveRequest{Path: data, ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	node := waitDisk(t, ctx, c2, 1, 1<<20)
	s := testrootfs.Spec("busybox", "sha256sum", "/disk")
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/disk", Type: "bind", Source: node, Options: []string{"bind", "ro"}})
	if out, code := runContainerSpec(t, ctx, c2, "read", &api.Rootfs{Source: dev, Fstype: "ext4"}, s, nil); code != 0 || !strings.HasPrefix(out, sum) {
		t.Errorf("sha256sum of slot 1 in the restored VM: %q exit %d, want %s", out, code, sum)
	}
	if _, err := c2.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// startVMM runs `ember vmm --api-sock sock args...` and returns a client of
// its API once it is ready; the process is stopped and reaped when the
// test ends.
func startVMM(t *testing.T, ctx context.Context, ember, sock string, args ...string) *vmmapi.Client {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var logBuf strings.Builder
	cmd := exec.Command(ember, append([]string{"vmm", "--api-sock", sock, "--ready-fd", "3"}, args...)...)
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	vc := vmmapi.NewClient(sock)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vc.Action(sctx, vmmapi.ActionStop)
		vc.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("ember vmm output:\n%s", logBuf.String())
		}
	})
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 6)
		_, err := io.ReadFull(r, b)
		r.Close()
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("ember vmm never got ready: %v\n%s", err, logBuf.String())
		}
	case <-ctx.Done():
		t.Fatalf("ember vmm never got ready: %v", ctx.Err())
	}
	return vc
}

// waitDisk asks the agent for spare slot's disk of size bytes.
func waitDisk(t *testing.T, ctx context.Context, c *client.Client, slot int, size int64) string {
	t.Helper()
	r, err := c.WaitBlockDevice(ctx, &api.WaitBlockDeviceRequest{Serial: boot.SpareDriveID(slot), SizeBytes: uint64(size), TimeoutNs: uint64(20 * time.Second)})
	if err != nil {
		t.Fatalf("slot %d: %v", slot, err)
	}
	return r.Device
}

func copyFile(t *testing.T, src, dst string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// randomImage writes n random bytes to p and returns p and their sha256.
func randomImage(t *testing.T, p string, n int) (string, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return p, hex.EncodeToString(sum[:])
}
