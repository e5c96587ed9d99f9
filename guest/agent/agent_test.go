package agent

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

func TestExitStatus(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		script string
		code   uint32
	}{
		{"true", "true", 0},
		{"exit 3", "exit 3", 3},
		{"exit 255", "exit 255", 255},
		{"false", "false", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			_, st := h.run("exit", testSpec("sh", "-c", tc.script))
			if st.ExitStatus != tc.code || st.Signal != 0 {
				t.Errorf("status = %d signal %d, want %d", st.ExitStatus, st.Signal, tc.code)
			}
		})
	}
}

func TestSignalDeaths(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		execID string // "" signals the container's own process
		signal unix.Signal
		group  bool
		code   uint32
	}{
		{"container SIGKILL", "", unix.SIGKILL, false, 137},
		{"exec SIGTERM", "e1", unix.SIGTERM, false, 143},
		{"exec SIGKILL group", "e2", unix.SIGKILL, true, 137},
		{"exec SIGINT", "e3", unix.SIGINT, false, 130},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := h.with(t)
			ctx := h.ctx()
			h.startSleeper("sig")
			defer h.client.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "sig", Force: true})
			if tc.execID != "" {
				if _, err := h.exec(ctx, "sig", tc.execID, &specs.Process{Args: []string{"sleep", "1000"}}, false); err != nil {
					t.Fatal(err)
				}
			}
			ref := &api.ProcessRef{ContainerId: "sig", ExecId: tc.execID}
			if _, err := h.client.SignalProcess(ctx, &api.SignalProcessRequest{Process: ref, Signal: uint32(tc.signal), Group: tc.group}); err != nil {
				t.Fatal(err)
			}
			st := h.wait(ctx, "sig", tc.execID)
			if st.ExitStatus != tc.code || st.Signal != uint32(tc.signal) {
				t.Errorf("status %d signal %d, want %d (%v)", st.ExitStatus, st.Signal, tc.code, tc.signal)
			}
			// A dead process cannot be signalled again.
			_, err := h.client.SignalProcess(ctx, &api.SignalProcessRequest{Process: ref, Signal: 9})
			wantCode(t, err, codes.FailedPrecondition, "exited")
		})
	}
}

func TestStdoutStderrSeparation(t *testing.T) {
	h := newHarness(t)
	out, st := h.run("sep", testSpec("sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 4"))
	if st.ExitStatus != 4 {
		t.Errorf("status %d", st.ExitStatus)
	}
	if got := out.stdout.String(); got != "out1\nout2\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := out.stderr.String(); got != "err1\nerr2\n" {
		t.Errorf("stderr = %q", got)
	}
}

func TestLargeOutput(t *testing.T) {
	h := newHarness(t)
	// ~6.9 MB on stdout and ~3.4 MB on stderr at the same time, read in
	// small pieces so that the pipes fill and the writers block.
	const n, m = 1000000, 500000
	var wantOut, wantErr strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&wantOut, "%d\n", i)
	}
	for i := 1; i <= m; i++ {
		fmt.Fprintf(&wantErr, "%d\n", i)
	}
	ctx := h.ctx()
	spec := testSpec("sh", "-c", fmt.Sprintf("seq 1 %d >&2 & seq 1 %d; wait", m, n))
	if err := h.create(ctx, "big", spec, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "big"}); err != nil {
		t.Fatal(err)
	}
	// Let the process run into the full pipes before reading anything.
	time.Sleep(100 * time.Millisecond)
	out := h.collect(ctx, &api.ProcessRef{ContainerId: "big"}, 16<<10)
	st := h.wait(ctx, "big", "")
	out.wait(t)
	if st.ExitStatus != 0 {
		t.Errorf("status %d", st.ExitStatus)
	}
	if out.stdout.Len() != wantOut.Len() || out.stdout.String() != wantOut.String() {
		t.Errorf("stdout: %d bytes, want %d (equal %v)", out.stdout.Len(), wantOut.Len(), out.stdout.String() == wantOut.String())
	}
	if out.stderr.String() != wantErr.String() {
		t.Errorf("stderr: %d bytes, want %d", out.stderr.Len(), wantErr.Len())
	}
}

func TestStdinEOF(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	if err := h.create(ctx, "cat", testSpec("sh", "-c", "cat; echo done >&2"), true); err != nil {
		t.Fatal(err)
	}
	ref := &api.ProcessRef{ContainerId: "cat"}
	out := h.collect(ctx, ref, 0)
	if _, err := h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "cat"}); err != nil {
		t.Fatal(err)
	}
	// 2 MiB: more than the pipes hold, so writes block until cat reads.
	data := bytes.Repeat([]byte("0123456789abcdef"), 128<<10)
	for off := 0; off < len(data); off += 256 << 10 {
		r, err := h.client.WriteStdin(ctx, &api.WriteStdinRequest{Process: ref, Data: data[off : off+256<<10]})
		if err != nil || r.Written != 256<<10 {
			t.Fatalf("write stdin: %v %v", r, err)
		}
	}
	if _, err := h.client.CloseStdin(ctx, &api.CloseStdinRequest{Process: ref}); err != nil {
		t.Fatal(err)
	}
	st := h.wait(ctx, "cat", "")
	out.wait(t)
	if st.ExitStatus != 0 || !bytes.Equal(out.stdout.Bytes(), data) || out.stderr.String() != "done\n" {
		t.Errorf("status %d, stdout %d bytes (equal %v), stderr %q", st.ExitStatus, out.stdout.Len(), bytes.Equal(out.stdout.Bytes(), data), out.stderr.String())
	}
	_, err := h.client.WriteStdin(ctx, &api.WriteStdinRequest{Process: ref, Data: []byte("x")})
	wantCode(t, err, codes.FailedPrecondition, "stdin")
}

func TestExecIntoRunningContainer(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	h.startSleeper("web")
	out, err := h.exec(ctx, "web", "probe", &specs.Process{
		Args: []string{"sh", "-c", `hostname; cat /proc/1/cmdline | tr '\0' ' '; echo; echo $$; pwd; echo $FOO; ls /tmp`},
		Env:  []string{"PATH=/bin", "FOO=bar"},
		Cwd:  "/tmp",
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	st := h.wait(ctx, "web", "probe")
	out.wait(t)
	lines := strings.Split(strings.TrimRight(out.stdout.String(), "\n"), "\n")
	if st.ExitStatus != 0 || len(lines) < 5 {
		t.Fatalf("status %d, stdout %q, stderr %q", st.ExitStatus, out.stdout.String(), out.stderr.String())
	}
	if lines[0] != "ctr" {
		t.Errorf("hostname %q: not the container's uts namespace", lines[0])
	}
	if strings.TrimSpace(lines[1]) != "sleep 1000" {
		t.Errorf("/proc/1 is %q: not the container's pid namespace", lines[1])
	}
	if pid, _ := strconv.Atoi(lines[2]); pid < 2 || pid > 100 {
		t.Errorf("pid in container = %q", lines[2])
	}
	if lines[3] != "/tmp" || lines[4] != "bar" {
		t.Errorf("cwd %q env %q", lines[3], lines[4])
	}
	// The exec'd process shows up in the container's pid list while it
	// runs, and exec ids are unique.
	if _, err := h.exec(ctx, "web", "sleeper", &specs.Process{Args: []string{"sleep", "1000"}}, false); err != nil {
		t.Fatal(err)
	}
	_, err = h.exec(ctx, "web", "sleeper", &specs.Process{Args: []string{"true"}}, false)
	wantCode(t, err, codes.AlreadyExists)
	pids, err := h.client.ListPids(ctx, &api.ListPidsRequest{ContainerId: "web"})
	if err != nil || len(pids.Pids) != 2 {
		t.Errorf("pids = %v (%v), want 2", pids, err)
	}
	// Exec into a stopped container is refused.
	if _, err := h.client.SignalProcess(ctx, &api.SignalProcessRequest{Process: &api.ProcessRef{ContainerId: "web"}, Signal: 9}); err != nil {
		t.Fatal(err)
	}
	h.wait(ctx, "web", "")
	h.wait(ctx, "web", "sleeper") // killed with the pid namespace
	_, err = h.exec(ctx, "web", "late", &specs.Process{Args: []string{"true"}}, false)
	wantCode(t, err, codes.FailedPrecondition, "stopped")
	if _, err := h.client.DeleteProcess(ctx, &api.DeleteProcessRequest{Process: &api.ProcessRef{ContainerId: "web", ExecId: "probe"}}); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.WaitProcess(ctx, &api.WaitProcessRequest{Process: &api.ProcessRef{ContainerId: "web", ExecId: "probe"}})
	wantCode(t, err, codes.NotFound)
}

func TestKillProcessGroup(t *testing.T) {
	h := newHarness(t)
	ctx := h.ctx()
	h.startSleeper("pg")
	err := h.startExec(ctx, "pg", "tree", &specs.Process{
		Args: []string{"sh", "-c", "sleep 1000 & sleep 1000 & echo started; wait"},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := h.client.ReadStdout(ctx, &api.ReadStreamRequest{Process: &api.ProcessRef{ContainerId: "pg", ExecId: "tree"}})
	if err != nil || string(r.Data) != "started\n" {
		t.Fatalf("read: %q %v", r.GetData(), err)
	}
	pids, _ := h.client.ListPids(ctx, &api.ListPidsRequest{ContainerId: "pg"})
	if len(pids.GetPids()) != 4 {
		t.Errorf("before: pids = %v, want init + sh + 2 sleeps", pids.GetPids())
	}
	if _, err := h.client.SignalProcess(ctx, &api.SignalProcessRequest{
		Process: &api.ProcessRef{ContainerId: "pg", ExecId: "tree"}, Signal: uint32(unix.SIGTERM), Group: true,
	}); err != nil {
		t.Fatal(err)
	}
	st := h.wait(ctx, "pg", "tree")
	// EOF: the background sleeps held stdout too, so they are gone.
	h.collect(ctx, &api.ProcessRef{ContainerId: "pg", ExecId: "tree"}, 0).wait(t)
	if st.ExitStatus != 143 {
		t.Errorf("status %d, want 143", st.ExitStatus)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids, err := h.client.ListPids(ctx, &api.ListPidsRequest{ContainerId: "pg"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pids.Pids) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after group kill: pids = %v, want only the container's init", pids.Pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
