package shim

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/internal/ociimage"
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
	profile := snapshotProfile(t, ctx, ember, t.TempDir(), 2)

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
