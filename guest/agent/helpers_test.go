package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/container"
	"github.com/embervm/ember/guest/reaper"
	"github.com/embervm/ember/guest/testrootfs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// testRootfs is a tiny rootfs directory shared by the tests (read-only
// for the containers).
var testRootfs string

func TestMain(m *testing.M) {
	// Containers are started by re-executing this test binary.
	container.RunInitIfRequested()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "ember-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	testRootfs = filepath.Join(dir, "rootfs")
	if err := testrootfs.Build(testRootfs); err != nil {
		fmt.Fprintln(os.Stderr, "build test rootfs:", err)
		return 1
	}
	return m.Run()
}

// testSpec is a minimal OCI spec running args with the usual mounts.
func testSpec(args ...string) *specs.Spec { return testrootfs.Spec(args...) }

// harness is one agent serving on a Unix socket, and a client to it.
type harness struct {
	t      *testing.T // nil in benchmarks
	tb     testing.TB
	agent  *Agent
	client api.AgentService
	raw    *ttrpc.Client
	sock   string
	cancel context.CancelFunc
	served chan error
}

// ctx returns a context bounded so that a hang fails the test, not the run.
func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

// newHarness starts an agent; opts adjust its container manager's
// configuration.
func newHarness(t testing.TB, opts ...func(*container.Config)) *harness {
	tt, _ := t.(*testing.T)
	dir := t.TempDir()
	r := reaper.New(reaper.ModeRegistered)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := container.Config{StateDir: filepath.Join(dir, "state"), Reaper: r, Log: log}
	for _, o := range opts {
		o(&cfg)
	}
	mgr := container.NewManager(cfg)
	a, err := New(Config{Containers: mgr, Log: log, ShutdownGrace: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: tt, tb: t, agent: a, sock: sock, cancel: cancel, served: make(chan error, 1)}
	go func() { h.served <- a.Serve(ctx, l) }()
	h.raw = h.dial(t)
	h.client = api.NewAgentClient(h.raw)
	t.Cleanup(func() {
		// Kill whatever a failed test left running.
		for _, c := range mgr.List() {
			_ = mgr.Remove(context.Background(), c.ID(), true)
		}
		h.raw.Close()
		cancel()
		<-h.served
		r.Stop()
	})
	return h
}

// with returns the harness reporting to t (a subtest).
func (h *harness) with(t *testing.T) *harness {
	c := *h
	c.t, c.tb = t, t
	return &c
}

func (h *harness) dial(t testing.TB) *ttrpc.Client {
	conn, err := net.Dial("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	return ttrpc.NewClient(conn)
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := jsonMarshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// create creates a container from spec with the shared rootfs.
func (h *harness) create(ctx context.Context, id string, spec *specs.Spec, stdin bool) error {
	_, err := h.client.CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: id,
		OciSpec:     mustJSON(h.tb, spec),
		Rootfs:      &api.Rootfs{Source: testRootfs},
		Stdio:       &api.Stdio{Stdin: stdin},
	})
	return err
}

// output collects a process's stdout and stderr until EOF.
type output struct {
	stdout, stderr bytes.Buffer
	err            error
	done           chan struct{}
}

// collect reads both streams concurrently, maxBytes per call.
func (h *harness) collect(ctx context.Context, ref *api.ProcessRef, maxBytes uint32) *output {
	o := &output{done: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	read := func(buf *bytes.Buffer, call func(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error)) {
		defer wg.Done()
		for {
			r, err := call(ctx, &api.ReadStreamRequest{Process: ref, MaxBytes: maxBytes})
			if err != nil {
				mu.Lock()
				o.err = errors.Join(o.err, err)
				mu.Unlock()
				return
			}
			buf.Write(r.Data)
			if r.Eof {
				return
			}
		}
	}
	wg.Add(2)
	go read(&o.stdout, h.client.ReadStdout)
	go read(&o.stderr, h.client.ReadStderr)
	go func() { wg.Wait(); close(o.done) }()
	return o
}

func (o *output) wait(t testing.TB) {
	t.Helper()
	<-o.done
	if o.err != nil {
		t.Fatalf("reading output: %v", o.err)
	}
}

// run creates and starts container id with spec, collects its output and
// waits for it.
func (h *harness) run(id string, spec *specs.Spec) (*output, *api.WaitProcessResponse) {
	h.t.Helper()
	ctx := h.ctx()
	if err := h.create(ctx, id, spec, false); err != nil {
		h.t.Fatalf("create %s: %v", id, err)
	}
	ref := &api.ProcessRef{ContainerId: id}
	out := h.collect(ctx, ref, 0)
	if _, err := h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}); err != nil {
		h.t.Fatalf("start %s: %v", id, err)
	}
	st, err := h.client.WaitProcess(ctx, &api.WaitProcessRequest{Process: ref})
	if err != nil {
		h.t.Fatalf("wait %s: %v", id, err)
	}
	out.wait(h.t)
	if _, err := h.client.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: id}); err != nil {
		h.t.Fatalf("remove %s: %v", id, err)
	}
	return out, st
}

// startSleeper starts a container whose process sleeps.
func (h *harness) startSleeper(id string) {
	h.t.Helper()
	ctx := h.ctx()
	if err := h.create(ctx, id, testSpec("sleep", "1000"), false); err != nil {
		h.t.Fatalf("create %s: %v", id, err)
	}
	if _, err := h.client.StartContainer(ctx, &api.StartContainerRequest{ContainerId: id}); err != nil {
		h.t.Fatalf("start %s: %v", id, err)
	}
}

// exec starts an exec process and returns its output collector.
func (h *harness) exec(ctx context.Context, id, execID string, proc *specs.Process, stdin bool) (*output, error) {
	if err := h.startExec(ctx, id, execID, proc, stdin); err != nil {
		return nil, err
	}
	return h.collect(ctx, &api.ProcessRef{ContainerId: id, ExecId: execID}, 0), nil
}

// startExec starts an exec process.
func (h *harness) startExec(ctx context.Context, id, execID string, proc *specs.Process, stdin bool) error {
	if proc.Env == nil {
		proc.Env = []string{"PATH=/bin"}
	}
	if proc.Cwd == "" {
		proc.Cwd = "/"
	}
	_, err := h.client.ExecProcess(ctx, &api.ExecProcessRequest{
		ContainerId: id, ExecId: execID, OciProcess: mustJSON(h.tb, proc), Stdio: &api.Stdio{Stdin: stdin},
	})
	return err
}

func (h *harness) wait(ctx context.Context, id, execID string) *api.WaitProcessResponse {
	h.t.Helper()
	st, err := h.client.WaitProcess(ctx, &api.WaitProcessRequest{Process: &api.ProcessRef{ContainerId: id, ExecId: execID}})
	if err != nil {
		h.t.Fatalf("wait %s/%s: %v", id, execID, err)
	}
	return st
}

// wantCode checks an RPC error's status code (and that the message has
// every one of substrings).
func wantCode(t *testing.T, err error, code codes.Code, substrings ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", code)
	}
	st, _ := status.FromError(err)
	if st.Code() != code {
		t.Fatalf("code = %v (%v), want %v", st.Code(), err, code)
	}
	for _, s := range substrings {
		if !strings.Contains(st.Message(), s) {
			t.Errorf("message %q lacks %q", st.Message(), s)
		}
	}
}
