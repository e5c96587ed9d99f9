package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/cgroups"
	"github.com/embervm/ember/guest/container"
	"google.golang.org/grpc/codes"
)

// fakeCgroups gives the harness's containers cgroups in a plain directory
// (the hosts run cgroup v1), whose memory.events the test writes as the
// kernel would.
func fakeCgroups(t *testing.T) (func(*container.Config), string) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := cgroups.Open(root, false)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *container.Config) { c.Cgroups = h }, root
}

// setOOMKills writes a container's memory.events in place, as the kernel
// updates it.
func setOOMKills(t *testing.T, root, id string, n int) {
	t.Helper()
	data := []byte("low 0\nhigh 0\nmax 7\noom 1\noom_kill " + strconv.Itoa(n) + "\noom_group_kill 0\n")
	if err := os.WriteFile(filepath.Join(root, "ember", id, "memory.events"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

type oomResult struct {
	resp *api.WaitOOMResponse
	err  error
}

func TestWaitOOM(t *testing.T) {
	opt, root := fakeCgroups(t)
	h := newHarness(t, opt)
	ctx := h.ctx()
	h.startSleeper("oom1")
	setOOMKills(t, root, "oom1", 0)

	wait := func(after uint64) chan oomResult {
		ch := make(chan oomResult, 1)
		go func() {
			r, err := h.client.WaitOOM(ctx, &api.WaitOOMRequest{ContainerId: "oom1", AfterOomKills: after})
			ch <- oomResult{r, err}
		}()
		return ch
	}
	get := func(ch chan oomResult) *api.WaitOOMResponse {
		t.Helper()
		select {
		case r := <-ch:
			if r.err != nil {
				t.Fatalf("WaitOOM: %v", r.err)
			}
			return r.resp
		case <-time.After(10 * time.Second):
			t.Fatal("WaitOOM did not return within 10 s")
		}
		return nil
	}

	ch := wait(0)
	select {
	case r := <-ch:
		t.Fatalf("WaitOOM returned before an OOM kill: %+v %v", r.resp, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	setOOMKills(t, root, "oom1", 1)
	if r := get(ch); r.OomKills != 1 || r.Stopped {
		t.Errorf("after one kill: %+v, want 1, running", r)
	}
	// A count the caller has not seen yet returns at once.
	setOOMKills(t, root, "oom1", 2)
	if r := get(wait(1)); r.OomKills != 2 || r.Stopped {
		t.Errorf("after two kills: %+v, want 2, running", r)
	}
	// The container's end ends the wait, with the final count.
	ch = wait(2)
	setOOMKills(t, root, "oom1", 3) // counted before the SIGKILL
	if _, err := h.client.SignalProcess(ctx, &api.SignalProcessRequest{Process: &api.ProcessRef{ContainerId: "oom1"}, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if st := h.wait(ctx, "oom1", ""); st.ExitStatus != 137 || st.OomKills != 3 {
		t.Errorf("WaitProcess: status %d, oom_kills %d; want 137, 3", st.ExitStatus, st.OomKills)
	}
	r := get(ch)
	if r.OomKills != 3 {
		t.Errorf("WaitOOM: %+v, want 3", r)
	}
	// Stopped: the count cannot grow any more.
	if r := get(wait(3)); r.OomKills != 3 || !r.Stopped {
		t.Errorf("WaitOOM on a stopped container: %+v, want 3, stopped", r)
	}
	// A real cgroup directory's files go with rmdir; the stand-in's must
	// go first.
	files, _ := filepath.Glob(filepath.Join(root, "ember", "oom1", "*"))
	for _, f := range files {
		os.Remove(f)
	}
	if _, err := h.client.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "oom1"}); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.WaitOOM(ctx, &api.WaitOOMRequest{ContainerId: "oom1"})
	wantCode(t, err, codes.NotFound)
}

func TestWaitOOMUnavailable(t *testing.T) {
	tests := []struct {
		name    string
		cgroups bool
		id      string
		code    codes.Code
		msg     string
	}{
		{"no cgroup v2", false, "nocg", codes.Unimplemented, "no cgroup v2"},
		{"no memory controller", true, "nomem", codes.Unimplemented, "memory controller"},
		{"unknown container", false, "", codes.NotFound, "nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []func(*container.Config)
			if tc.cgroups {
				opt, _ := fakeCgroups(t)
				opts = append(opts, opt)
			}
			h := newHarness(t, opts...)
			ctx := h.ctx()
			id := "nope"
			if tc.id != "" {
				id = tc.id
				h.startSleeper(id)
			}
			_, err := h.client.WaitOOM(ctx, &api.WaitOOMRequest{ContainerId: id})
			wantCode(t, err, tc.code, tc.msg)
			if tc.id != "" {
				// Without the counter, exits report none.
				h.client.SignalProcess(ctx, &api.SignalProcessRequest{Process: &api.ProcessRef{ContainerId: id}, Signal: 9})
				if st := h.wait(ctx, id, ""); st.OomKills != 0 {
					t.Errorf("WaitProcess oom_kills = %d, want 0", st.OomKills)
				}
			}
		})
	}
}
