package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
)

func TestProcessFields(t *testing.T) {
	h := newHarness(t)
	shared := t.TempDir()
	if err := os.WriteFile(filepath.Join(shared, "hello"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	umask := uint32(0o077)
	tests := []struct {
		name   string
		script string
		edit   func(*specs.Spec)
		want   string
	}{
		{"user and groups", "id -u; id -g; id -G", func(s *specs.Spec) {
			s.Process.User = specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{10, 20}}
		}, "1000\n1001\n1001 10 20\n"},
		{"rlimit", "ulimit -n; ulimit -Hn", func(s *specs.Spec) {
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 123, Hard: 456}}
		}, "123\n456\n"},
		{"no_new_privileges", "grep NoNewPrivs /proc/self/status", func(s *specs.Spec) {
			s.Process.NoNewPrivileges = true
		}, "NoNewPrivs:\t1\n"},
		{"cwd and env", "pwd; echo $GREETING", func(s *specs.Spec) {
			s.Process.Cwd = "/tmp"
			s.Process.Env = append(s.Process.Env, "GREETING=hi")
		}, "/tmp\nhi\n"},
		{"umask", "umask", func(s *specs.Spec) { s.Process.User.Umask = &umask }, "0077\n"},
		{"hostname", "hostname", func(s *specs.Spec) { s.Hostname = "pod-a" }, "pod-a\n"},
		{"bind mount", "cat /data/hello; touch /data/x 2>/dev/null || echo ro", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: shared, Options: []string{"rbind", "ro"}})
		}, "from the host\nro\n"},
		{"read-only rootfs, writable tmpfs", "touch /x 2>/dev/null || echo ro; touch /tmp/y && echo rw", nil, "ro\nrw\n"},
		{"own pid namespace", "echo $$", nil, "1\n"},
		{"devices", "echo x > /dev/null && head -c 3 /dev/zero | wc -c", nil, "3\n"},
		{"masked path", "wc -c < /proc/keys; ls /proc/acpi | wc -l", nil, "0\n0\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			spec := testSpec("sh", "-c", tc.script)
			if tc.edit != nil {
				tc.edit(spec)
			}
			out, st := h.run("fields", spec)
			if st.ExitStatus != 0 || out.stdout.String() != tc.want {
				t.Errorf("status %d, stdout %q (want %q), stderr %q", st.ExitStatus, out.stdout.String(), tc.want, out.stderr.String())
			}
		})
	}
}

func TestTerminal(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	spec := testSpec("sh", "-c", "test -t 0 && test -t 1 && echo isatty; stty size; read line; stty size")
	spec.Process.Terminal = true
	spec.Process.ConsoleSize = &specs.Box{Height: 24, Width: 80}
	if err := h.create(ctx, "tty", spec, true); err != nil {
		t.Fatal(err)
	}
	ref := &api.ProcessRef{ContainerId: "tty"}
	if _, err := h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "tty"}); err != nil {
		t.Fatal(err)
	}
	// Read until the first size is printed, resize, then let it go on.
	var got strings.Builder
	for !strings.Contains(got.String(), "24 80") {
		r, err := h.client.ReadStdout(ctx, &api.ReadStreamRequest{Process: ref})
		if err != nil || r.Eof {
			t.Fatalf("read: %v (eof %v), so far %q", err, r.GetEof(), got.String())
		}
		got.Write(r.Data)
	}
	if _, err := h.client.ResizeTTY(ctx, &api.ResizeTTYRequest{Process: ref, Rows: 50, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.WriteStdin(ctx, &api.WriteStdinRequest{Process: ref, Data: []byte("go\n")}); err != nil {
		t.Fatal(err)
	}
	out := h.collect(ctx, ref, 0)
	st := h.wait(ctx, "tty", "")
	out.wait(t)
	got.WriteString(out.stdout.String())
	if st.ExitStatus != 0 || !strings.Contains(got.String(), "isatty") || !strings.Contains(got.String(), "50 120") {
		t.Errorf("status %d, output %q", st.ExitStatus, got.String())
	}
	if out.stderr.Len() != 0 {
		t.Errorf("a terminal process has no separate stderr: %q", out.stderr.String())
	}
	_, err := h.client.ResizeTTY(ctx, &api.ResizeTTYRequest{Process: &api.ProcessRef{ContainerId: "ghost"}, Rows: 1, Cols: 1})
	wantCode(t, err, codes.NotFound)
}

func TestStatsAndResources(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	h.startSleeper("s")
	if err := h.startExec(ctx, "s", "spin", &specs.Process{Args: []string{"sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000"}}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	st, err := h.client.Stats(ctx, &api.StatsRequest{ContainerId: "s"})
	if err != nil {
		t.Fatal(err)
	}
	// The development hosts have cgroup v1: the figures come from procfs.
	if st.Source != "procfs" && st.Source != "cgroup2" {
		t.Errorf("source %q", st.Source)
	}
	if st.PidsCurrent != 2 || st.MemoryUsageBytes == 0 || st.CpuUsageNs == 0 {
		t.Errorf("stats = %+v", st)
	}
	lim := int64(64 << 20)
	_, err = h.client.UpdateResources(ctx, &api.UpdateResourcesRequest{ContainerId: "s", OciResources: mustJSON(t, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &lim}})})
	if st.Source == "procfs" {
		wantCode(t, err, codes.Unimplemented, "cgroup v2")
	} else if err != nil {
		t.Error(err)
	}
	_, err = h.client.UpdateResources(ctx, &api.UpdateResourcesRequest{ContainerId: "s", OciResources: []byte("[")})
	wantCode(t, err, codes.InvalidArgument, "oci_resources")
}

func TestRemoveContainer(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	h.startSleeper("rm")
	_, err := h.client.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "rm"})
	wantCode(t, err, codes.FailedPrecondition, "running")
	_, err = h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "rm"})
	wantCode(t, err, codes.FailedPrecondition, "running -> running")
	if _, err := h.client.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "rm", Force: true}); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.Stats(ctx, &api.StatsRequest{ContainerId: "rm"})
	wantCode(t, err, codes.NotFound)
	// A created (never started) container can be removed too.
	if err := h.create(ctx, "created", testSpec("true"), false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "created", Force: true}); err != nil {
		t.Fatal(err)
	}
}

func TestShutdown(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	h.startSleeper("a")
	h.startSleeper("b")
	if _, err := h.client.Shutdown(ctx, &api.ShutdownRequest{GraceNs: int64(200 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	// Shutdown returns once every container stopped; sleep as pid 1 of
	// its namespace ignores SIGTERM, so it was killed after the grace.
	for _, c := range h.agent.cfg.Containers.List() {
		if st := c.Init().Status(); c.State().String() != "stopped" || st.Code != 137 {
			t.Errorf("%s: %s, status %d", c.ID(), c.State(), st.Code)
		}
	}
	select {
	case err := <-h.served:
		if err != nil {
			t.Fatal(err)
		}
		h.served <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
}
