package shim

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/internal/ociimage"
	"github.com/embervm/ember/vmm/boot"
)

// TestNativeShimRestore runs containers in VMs restored from a snapshot
// profile (backend = "restore"): the profile is a snapshot of an idle agent
// VM with empty spare drive slots (ember snapshot create), each container's
// rootfs is attached to a slot of its restored VM before it resumes, and a
// second container of the pod gets the next slot.
func TestNativeShimRestore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ember, err := exec.LookPath("ember")
	if err != nil {
		ember = "/bin/ember"
	}
	dir := t.TempDir()
	bc, err := json.Marshal(boot.Config{
		Kernel: kernelPath, Initrd: initrdPath, MemoryMiB: 256, VCPUs: 1, RNG: true, SpareDrives: 2,
		Vsock: &boot.Vsock{GuestCID: 3, UDS: filepath.Join(dir, "profile-vsock.sock")},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, profile := filepath.Join(dir, "boot.json"), filepath.Join(dir, "profile")
	if err := os.WriteFile(cfgPath, bc, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// --settle: the agent idles in the snapshot (it just started serving).
	out, err := exec.CommandContext(ctx, ember, "snapshot", "create", "--config", cfgPath, "--out", profile,
		"--wait-for", "ember-agent ready", "--settle", "2s").CombinedOutput()
	if err != nil {
		t.Fatalf("ember snapshot create: %v\n%s", err, out)
	}
	t.Logf("snapshot profile written in %v", time.Since(start).Round(time.Millisecond))

	e := startContainerdWith(t, `backend = "restore"
snapshot_profile = "`+profile+`"`)
	t.Cleanup(func() {
		// Registered after containerd's cleanup, so it runs first: the head
		// of a crashed guest's console says why.
		if !t.Failed() {
			return
		}
		consoles, _ := filepath.Glob(filepath.Join(e.stateDir, "consoles", "*.log"))
		for _, c := range consoles {
			b, _ := os.ReadFile(c)
			t.Logf("guest console %s (head):\n%s", filepath.Base(c), b[:min(len(b), 4000)])
		}
	})
	img, err := ociimage.Busybox("/bin/busybox", imageName)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e.ctrIn(string(img), "images", "import", "-"); err != nil || r.code != 0 {
		t.Fatalf("ctr images import: %v %+v\n%s", err, r, e.logTail())
	}

	r := e.must(0, e.run("restored1", []string{"--rm"}, "sh", "-c", "echo from-restore")...)
	if r.stdout != "from-restore\n" {
		t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	t.Logf("ctr run --rm in a restored VM: %v", r.took.Round(time.Millisecond))
	if log, _ := os.ReadFile(e.log.Name()); !strings.Contains(string(log), "served by restore") {
		t.Errorf("the VM did not come from the restore source:\n%s", e.logTail())
	}
	e.waitNoLeftovers(t)

	pod := []string{"--annotation", "io.kubernetes.cri.sandbox-id=rpod"}
	e.must(0, e.run("rpod-a", append([]string{"-d"}, pod...), "sh", "-c", "while :; do sleep 1; done")...)
	defer e.ctr("containers", "rm", "rpod-a")
	r = e.must(0, e.run("rpod-b", append([]string{"--rm"}, pod...), "echo", "second")...)
	if r.stdout != "second\n" {
		t.Fatalf("second container of a restored pod: stdout %q stderr %q", r.stdout, r.stderr)
	}
	e.must(0, "task", "kill", "-s", "SIGKILL", "rpod-a")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.must(0, "task", "ls").stdout, "STOPPED") {
		if time.Now().After(deadline) {
			t.Fatal("rpod-a not stopped 30 s after SIGKILL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.must(0, "task", "rm", "rpod-a")
	e.must(0, "containers", "rm", "rpod-a")
	e.waitNoLeftovers(t)
}
