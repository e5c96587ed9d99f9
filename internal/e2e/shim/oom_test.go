package shim

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embervm/ember/internal/ociimage"
)

// oomLimit is the containers' memory limit (ctr run --memory-limit): far
// below the VM's 256 MiB, so that the container's cgroup, not the VM,
// runs out.
const oomLimit = "20971520" // 20 MiB

// hog fills a 64 MiB buffer in one read(2) from /dev/zero: the pages are
// charged from inside the kernel's copy, so once reclaim finds nothing
// (no swap) the OOM killer runs at once, with no user code running that
// would fault its text back in (a shell growing a string to the limit
// can thrash the page cache for a minute first under TCG). The image has
// no dd link: busybox runs the applet.
var hog = []string{"busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}

// eventLog is `ctr events` running for the test: containerd's events as
// it publishes them, one line each ("TIME NAMESPACE TOPIC JSON").
type eventLog struct {
	cmd *exec.Cmd
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *eventLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// watchEvents starts `ctr events`; it ends with the test.
func (e *env) watchEvents(t *testing.T) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &eventLog{}
	l.cmd = exec.CommandContext(ctx, filepath.Join(binDir, "ctr"), "--address", e.sock, "--namespace", e.ns, "events")
	l.cmd.Env = e.envv
	l.cmd.Stdout, l.cmd.Stderr = l, l
	if err := l.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); l.cmd.Wait() })
	// The subscription is in place once an event shows up: label the
	// namespace (a /namespaces/update event) until one does.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		e.must(0, "namespaces", "label", e.ns, fmt.Sprintf("ember.e2e.events=%d", i))
		time.Sleep(200 * time.Millisecond)
		l.mu.Lock()
		n := l.buf.Len()
		l.mu.Unlock()
		if n > 0 {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatal("ctr events printed nothing within 30 s")
		}
	}
}

// lines returns the events of container id, in order.
func (l *eventLog) lines(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, `"container_id":"`+id+`"`) {
			out = append(out, line)
		}
	}
	return out
}

// topics are the topics of lines, in order.
func topics(lines []string) []string {
	var out []string
	for _, line := range lines {
		for _, f := range strings.Fields(line) {
			if strings.HasPrefix(f, "/tasks/") {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// waitTopics waits until container id's events include every topic of
// want, and returns them all.
func (l *eventLog) waitTopics(t *testing.T, id string, want ...string) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := l.lines(id)
		got := strings.Join(topics(lines), " ")
		all := true
		for _, w := range want {
			all = all && strings.Contains(got, w)
		}
		if all {
			return lines
		}
		if time.Now().After(deadline) {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("events of %s: %s; want %v\nctr events:\n%s", id, got, want, tail(l.buf.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNativeShimOOM: the kernel's OOM killer kills a process of a
// container with a memory limit, and containerd gets TaskOOM for it,
// before the TaskExit of the killed container's process.
func TestNativeShimOOM(t *testing.T) {
	e := startContainerd(t)
	img, err := ociimage.Busybox("/bin/busybox", imageName)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e.ctrIn(string(img), "images", "import", "-"); err != nil || r.code != 0 {
		t.Fatalf("ctr images import: %v %+v\n%s", err, r, e.logTail())
	}
	ev := e.watchEvents(t)

	t.Run("InitKilled", func(t *testing.T) {
		// The container's own process holds the memory: it is the
		// victim, and the task exits 128+SIGKILL.
		r := e.must(137, e.run("oom1", []string{"--rm", "--memory-limit", oomLimit}, hog...)...)
		t.Logf("OOM-killed in %v", r.took.Round(time.Millisecond))
		lines := ev.waitTopics(t, "oom1", "/tasks/oom", "/tasks/exit", "/tasks/delete")
		got := topics(lines)
		oom, exit := -1, -1
		for i, tp := range got {
			if tp == "/tasks/oom" && oom < 0 {
				oom = i
			}
			if tp == "/tasks/exit" && exit < 0 {
				exit = i
				if !strings.Contains(lines[i], `"exit_status":137`) {
					t.Errorf("TaskExit: %s, want exit_status 137", lines[i])
				}
			}
		}
		if oom > exit {
			t.Errorf("TaskOOM after TaskExit: %v", got)
		}
		t.Logf("events: %v", got)
		e.waitNoLeftovers(t)
	})

	t.Run("ChildKilled", func(t *testing.T) {
		// A child of the container's shell holds the memory: it is the
		// victim, the shell goes on and exits 0, and containerd still
		// hears of the OOM kill.
		r := e.must(0, e.run("oom2", []string{"--rm", "--memory-limit", oomLimit}, "sh", "-c", strings.Join(hog, " ")+"; echo survived $?")...)
		if r.stdout != "survived 137\n" {
			t.Fatalf("stdout %q, want %q (stderr %q)", r.stdout, "survived 137\n", r.stderr)
		}
		got := topics(ev.waitTopics(t, "oom2", "/tasks/oom", "/tasks/exit", "/tasks/delete"))
		t.Logf("events: %v", got)
		e.waitNoLeftovers(t)
	})

	t.Run("NoOOM", func(t *testing.T) {
		// Within the limit: no TaskOOM.
		e.must(0, e.run("oom3", []string{"--rm", "--memory-limit", oomLimit}, "busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=4")...)
		got := topics(ev.waitTopics(t, "oom3", "/tasks/exit", "/tasks/delete"))
		for _, tp := range got {
			if tp == "/tasks/oom" {
				t.Errorf("TaskOOM without an OOM kill: %v", got)
			}
		}
		e.waitNoLeftovers(t)
	})
}

// TestNativeCRIOOM is the Kubernetes view of an OOM kill: a pod's
// container with a memory limit (linux.resources.memory_limit_in_bytes,
// what a pod's resources.limits.memory becomes) goes over it, and the CRI
// reports it exited 137 with reason OOMKilled, which it sets from the
// shim's TaskOOM.
func TestNativeCRIOOM(t *testing.T) {
	c := startCRI(t)
	podCfg := c.writeJSON(t, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": "ember-oom", "namespace": "e2e", "uid": "ember-oom-uid", "attempt": 0},
		"log_directory": c.podLogDir,
		// Without a DNS config the CRI copies the host's resolv.conf
		// (L1 has none).
		"dns_config": map[string]any{"servers": []string{"10.88.9.53"}},
		"linux":      map[string]any{},
	})
	limit, err := strconv.ParseInt(oomLimit, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	ctrCfg := c.writeJSON(t, "hog.json", map[string]any{
		"metadata": map[string]any{"name": "hog"},
		"image":    map[string]any{"image": imageName},
		"command":  hog,
		"log_path": "hog.log",
		"linux":    map[string]any{"resources": map[string]any{"memory_limit_in_bytes": limit}},
	})
	pod := strings.TrimSpace(c.mustCrictl(t, "runp", "--runtime", criHandler, podCfg).stdout)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			c.crictl("stopp", pod)
			c.crictl("rmp", "-f", pod)
		}
	})
	id := strings.TrimSpace(c.mustCrictl(t, "create", pod, ctrCfg, podCfg).stdout)
	c.mustCrictl(t, "start", id)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st := c.inspect(t, id)
		if st.Status.State == "CONTAINER_EXITED" {
			if st.Status.ExitCode != 137 || st.Status.Reason != "OOMKilled" {
				t.Errorf("exited %d, reason %q (%s); want 137, OOMKilled", st.Status.ExitCode, st.Status.Reason, st.Status.Message)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not exited within 2 minutes: %+v", st.Status)
		}
		time.Sleep(300 * time.Millisecond)
	}
	c.mustCrictl(t, "stopp", pod)
	c.mustCrictl(t, "rmp", pod)
	stopped = true
	c.waitNoLeftovers(t)
}
