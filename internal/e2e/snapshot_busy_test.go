package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/client"
	"github.com/embervm/ember/guest/testrootfs"
	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
	"github.com/embervm/ember/internal/testguest"
	vmmapi "github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/kvm"
)

// TestNativeSnapshotBusyGuest snapshots agent VMs at instants when the
// guest is busy, with no settle delay, and restores each snapshot in a
// fresh `ember vmm --restore` process: the agent must answer, keep its
// containers and run new ones.
//   - "at agent ready": paused the moment the console shows "ember-agent
//     ready" (what `ember snapshot create --wait-for` without --settle
//     does): the agent is still starting up and the console is busy.
//   - "busy container": paused while a container spins in a shell loop and
//     another hashes /dev/zero (user-mode work, FPU state live in
//     registers, system calls).
func TestNativeSnapshotBusyGuest(t *testing.T) {
	ember := lab.GuestEmber
	if !labtest.InLab() {
		ember = filepath.Join(t.TempDir(), "ember")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := fixtures.GoBuild(ctx, "./cmd/ember", ember); err != nil {
			t.Fatal(err)
		}
	}
	rootfs := &api.Rootfs{Source: "/dev/vda", Fstype: "ext4", Readonly: true}
	for _, tt := range []struct {
		name string
		// busy brings the booted VM (its agent reachable over uds, not yet
		// dialled) to the instant of the snapshot; it returns the
		// containers that must survive the restore.
		busy func(t *testing.T, ctx context.Context, v *vm, uds string) []string
	}{
		{"at agent ready", func(t *testing.T, ctx context.Context, v *vm, uds string) []string {
			v.expect(t, ctx, "ember-agent ready")
			return nil
		}},
		{"busy container", func(t *testing.T, ctx context.Context, v *vm, uds string) []string {
			c, err := client.Dial(ctx, uds, api.DefaultVsockPort)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			busy := map[string][]string{
				"spin": {"sh", "-c", "i=0; while :; do i=$((i+1)); done"},
				"hash": {"busybox", "sha256sum", "/dev/zero"},
			}
			var ids []string
			for id, args := range busy {
				startContainer(t, ctx, c, id, rootfs, args...)
				ids = append(ids, id)
			}
			time.Sleep(500 * time.Millisecond)
			return ids
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
			defer cancel()
			dir := t.TempDir()
			uds := filepath.Join(dir, "vsock.sock")
			v := startVM(t, ctx, boot.Config{
				Initrd:  agentInitrd,
				Drives:  []boot.Drive{{Path: rootfsImage, ReadOnly: true, ID: "rootfs"}},
				Vsock:   &boot.Vsock{GuestCID: 3, UDS: uds},
				Cmdline: "quiet",
			})
			ids := tt.busy(t, ctx, v, uds)
			if err := v.Pause(ctx); err != nil {
				t.Fatal(err)
			}
			snapDir := filepath.Join(dir, "snap")
			if _, _, err := v.Snapshot(ctx, snapDir, boot.SnapshotOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := v.Stop(ctx); err != nil {
				t.Fatal(err)
			}

			sock, uds2 := filepath.Join(dir, "api.sock"), filepath.Join(dir, "vsock2.sock")
			consoleLog := filepath.Join(dir, "console2.log")
			vc := startVMM(t, ctx, ember, sock, "--restore", snapDir, "--backend", "copy", "--vsock-uds", uds2,
				"--console", consoleLog)
			defer func() {
				if t.Failed() {
					b, _ := os.ReadFile(consoleLog)
					t.Logf("restored guest console:\n%s", b)
				}
			}()
			if err := vc.Action(ctx, vmmapi.ActionResume); err != nil {
				t.Fatal(err)
			}
			dctx, dcancel := context.WithTimeout(ctx, 60*time.Second)
			defer dcancel()
			c2, err := client.Dial(dctx, uds2, api.DefaultVsockPort)
			if err != nil {
				t.Fatalf("dial the restored agent: %v", err)
			}
			defer c2.Close()
			if _, err := c2.SetTime(ctx, &api.SetTimeRequest{UnixNano: time.Now().UnixNano()}); err != nil {
				t.Fatal(err)
			}
			for _, id := range ids {
				pids, err := c2.ListPids(ctx, &api.ListPidsRequest{ContainerId: id})
				if err != nil || len(pids.Pids) == 0 {
					t.Errorf("container %s after the restore: pids %v, %v", id, pids, err)
				}
				if _, err := c2.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: id, Force: true}); err != nil {
					t.Errorf("remove %s: %v", id, err)
				}
			}
			out, code := runContainer(t, ctx, c2, "after", rootfs, "sh", "-c", "echo restored")
			if out != "restored\n" || code != 0 {
				t.Errorf("container in the restored VM: %q, exit %d", out, code)
			}
			if _, err := c2.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		})
	}
}

// startContainer creates and starts a container running args, without
// waiting for it.
func startContainer(t *testing.T, ctx context.Context, c *client.Client, id string, rootfs *api.Rootfs, args ...string) {
	t.Helper()
	spec, err := json.Marshal(testrootfs.Spec(args...))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: id, OciSpec: spec, Rootfs: rootfs,
		Stdio: &api.Stdio{}}); err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
	if _, err := c.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
}

// TestNativeTestGuestHopping is vmm's TestSaveRestoreAnyInstant on a KVM
// with hardware virtualization (SVM in the lab), whose exits differ from
// the development hosts' kvm_pvm: a port write there is finished (RIP
// moved past the OUT) only on the next KVM_RUN, and KVM reports the task
// register as busy while the VMCB holds it available.
func TestNativeTestGuestHopping(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	checks, err := testguest.HopChecks()
	if err != nil {
		t.Fatal(err)
	}
	for _, hc := range checks {
		t.Run(hc.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			r, err := hc.Hop(ctx, sys)
			if r != nil {
				t.Logf("%d moves: %+v", r.Hops, r)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
