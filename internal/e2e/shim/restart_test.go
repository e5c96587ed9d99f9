package shim

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/internal/ociimage"
)

// TestNativeShimContainerdRestart: containerd stops and starts again while
// a container runs in its VM. The shim and the VM keep running, the new
// containerd reconnects to the shim (from the state the shim left at
// start), and the task can still be listed, exec'd into, killed and
// deleted, leaving nothing behind.
func TestNativeShimContainerdRestart(t *testing.T) {
	e := startContainerd(t)
	img, err := ociimage.Busybox("/bin/busybox", imageName)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e.ctrIn(string(img), "images", "import", "-"); err != nil || r.code != 0 {
		t.Fatalf("ctr images import: %v %+v", err, r)
	}
	e.must(0, e.run("survivor", []string{"-d"}, "sh", "-c", "echo $$ > /tmp/pid; while :; do sleep 1; done")...)
	defer e.ctr("containers", "rm", "survivor")
	before := e.must(0, "task", "ls").stdout

	// containerd goes away (as on a restart of its service) and comes back.
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("containerd did not stop within 30 s of SIGTERM")
	}
	var shim, vmm bool
	for _, l := range e.leftovers() {
		shim = shim || strings.Contains(l, "containerd-shim-ember-v2")
		vmm = vmm || strings.Contains(l, " vmm ")
	}
	if !shim || !vmm {
		t.Fatalf("after containerd's stop: shim running %v, VMM running %v; both should be: %v", shim, vmm, e.leftovers())
	}
	e.launch(t)

	after := e.must(0, "task", "ls").stdout
	if !strings.Contains(after, "survivor") || !strings.Contains(after, "RUNNING") {
		t.Fatalf("after the restart, ctr task ls:\n%s\nbefore:\n%s", after, before)
	}
	r := e.must(0, "task", "exec", "--exec-id", "after-restart", "survivor", "cat", "/tmp/pid")
	if strings.TrimSpace(r.stdout) == "" {
		t.Errorf("exec after the restart printed %q (stderr %q)", r.stdout, r.stderr)
	}
	e.must(0, "task", "kill", "-s", "SIGKILL", "survivor")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(e.must(0, "task", "ls").stdout, "STOPPED") {
		if time.Now().After(deadline) {
			t.Fatal("survivor not stopped 30 s after SIGKILL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.must(0, "task", "rm", "survivor")
	e.must(0, "containers", "rm", "survivor")
	e.waitNoLeftovers(t)
}
