package task

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/shim/config"
	"github.com/embervm/ember/shim/rootfs"
	"github.com/embervm/ember/shim/vm"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeAgent plays the guest agent: processes exit when signalled or when
// the test says so.
type fakeAgent struct {
	vm.Agent // unimplemented methods panic
	mu       sync.Mutex
	exits    map[string]chan uint32
	hung     bool

	// OOM kills per container; oomChanged is closed (and replaced) when
	// one is counted. oomMode: "" (WaitOOM reports kills), "late"
	// (WaitOOM sees none: an exit reports the kill first), "old" (an
	// agent without WaitOOM).
	oomKills   map[string]uint64
	oomChanged chan struct{}
	oomMode    string
}

// oomKill counts an OOM kill in container id.
func (a *fakeAgent) oomKill(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.oomKills[id]++
	close(a.oomChanged)
	a.oomChanged = make(chan struct{})
}

func (a *fakeAgent) WaitOOM(ctx context.Context, r *api.WaitOOMRequest) (*api.WaitOOMResponse, error) {
	if a.oomMode == "old" {
		return nil, status.Error(codes.Unimplemented, "/ember.agent.v1.Agent/WaitOOM not implemented")
	}
	for {
		a.mu.Lock()
		n, changed := a.oomKills[r.ContainerId], a.oomChanged
		a.mu.Unlock()
		if n > r.AfterOomKills && a.oomMode == "" {
			return &api.WaitOOMResponse{OomKills: n}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (a *fakeAgent) exitCh(ref *api.ProcessRef) chan uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := ref.ContainerId + "/" + ref.ExecId
	if a.exits[k] == nil {
		a.exits[k] = make(chan uint32, 1)
	}
	return a.exits[k]
}

func (a *fakeAgent) CreateContainer(ctx context.Context, r *api.CreateContainerRequest) (*api.CreateContainerResponse, error) {
	return &api.CreateContainerResponse{Pid: 7}, nil
}
func (a *fakeAgent) StartContainer(ctx context.Context, r *api.StartContainerRequest) (*api.StartContainerResponse, error) {
	return &api.StartContainerResponse{Pid: 7}, nil
}
func (a *fakeAgent) RemoveContainer(ctx context.Context, r *api.RemoveContainerRequest) (*api.RemoveContainerResponse, error) {
	return &api.RemoveContainerResponse{}, nil
}
func (a *fakeAgent) SignalProcess(ctx context.Context, r *api.SignalProcessRequest) (*api.SignalProcessResponse, error) {
	if a.hung {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	a.exitCh(r.Process) <- 128 + r.Signal
	return &api.SignalProcessResponse{}, nil
}
func (a *fakeAgent) WaitProcess(ctx context.Context, r *api.WaitProcessRequest) (*api.WaitProcessResponse, error) {
	select {
	case st := <-a.exitCh(r.Process):
		a.mu.Lock()
		n := a.oomKills[r.Process.ContainerId]
		a.mu.Unlock()
		return &api.WaitProcessResponse{ExitStatus: st, ExitedAtUnixNano: time.Now().UnixNano(), OomKills: n}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type fakeVM struct {
	agent  *fakeAgent
	done   chan struct{}
	once   sync.Once
	killed bool
}

func (f *fakeVM) Agent() vm.Agent              { return f.agent }
func (f *fakeVM) Pid() int                     { return 1 }
func (f *fakeVM) Done() <-chan struct{}        { return f.done }
func (f *fakeVM) Err() error                   { return vm.ErrDied }
func (f *fakeVM) Pause(context.Context) error  { return nil }
func (f *fakeVM) Resume(context.Context) error { return nil }
func (f *fakeVM) Kill()                        { f.killed = true; f.once.Do(func() { close(f.done) }) }
func (f *fakeVM) Devices() []string            { return []string{vm.DevicePath(0)} }
func (f *fakeVM) AttachDrive(context.Context, rootfs.Drive) (string, error) {
	return "", vm.ErrNoHotAttach
}
func (f *fakeVM) DetachDrive(context.Context, string) error { return nil }

type recorder struct {
	mu     sync.Mutex
	topics []string
	msgs   []any
	delay  atomic.Int64 // each Publish takes this long (ns)
}

func (r *recorder) Publish(ctx context.Context, topic string, msg events.Event) error {
	time.Sleep(time.Duration(r.delay.Load()))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.topics = append(r.topics, topic)
	r.msgs = append(r.msgs, msg)
	return nil
}

func (r *recorder) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]string(nil), r.topics...)
		r.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newTestService(t *testing.T) (*Service, *fakeVM, *recorder, string) {
	dir := t.TempDir()
	root := filepath.Join(dir, "bundle", "rootfs")
	os.MkdirAll(root, 0o755)
	spec := specs.Spec{Root: &specs.Root{Path: "rootfs"}, Process: &specs.Process{Args: []string{"true"}}}
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(dir, "bundle", "config.json"), b, 0o644)
	cfg := config.Default()
	cfg.StateDir, cfg.CacheDir = filepath.Join(dir, "state"), filepath.Join(dir, "cache")
	fv := &fakeVM{agent: &fakeAgent{exits: map[string]chan uint32{},
		oomKills: map[string]uint64{}, oomChanged: make(chan struct{})}, done: make(chan struct{})}
	rec := &recorder{}
	ctx := namespaces.WithNamespace(context.Background(), "test")
	s := New(ctx, rec, nil, Options{
		LoadConfig: func() (config.Config, error) { return cfg, nil },
		StartVM:    func(context.Context, vm.Spec) (Sandbox, error) { return fv, nil },
		Cleanup:    func(string, config.Config) {},
	})
	t.Cleanup(s.Close)
	// Block mounts skip mkfs: the test is about the task API.
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, nil, 0o644)
	return s, fv, rec, filepath.Join(dir, "bundle") + "|" + img
}

func create(t *testing.T, s *Service, bundleImg, id string) {
	t.Helper()
	bundle, img, _ := cut(bundleImg)
	_, err := s.Create(namespaces.WithNamespace(context.Background(), "test"), &taskAPI.CreateTaskRequest{
		ID: id, Bundle: bundle, Rootfs: []*typesMount{{Type: "ext4", Source: img}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLifecycleEvents(t *testing.T) {
	s, fv, rec, b := newTestService(t)
	ctx := context.Background()
	create(t, s, b, "c1")
	if st, _ := s.State(ctx, &taskAPI.StateRequest{ID: "c1"}); st.Status != tasktypes.Status_CREATED {
		t.Errorf("state %v", st.Status)
	}
	// containerd sees the VMM's pid (the fake's 1), not the guest's (7):
	// ctr --cni would resolve a guest pid to a host process's namespace.
	if st, _ := s.State(ctx, &taskAPI.StateRequest{ID: "c1"}); st.Pid != uint32(fv.Pid()) {
		t.Errorf("state pid %d, want the VMM's %d", st.Pid, fv.Pid())
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("delete unknown: %v", err)
	}
	if st, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil || st.Pid != uint32(fv.Pid()) {
		t.Fatalf("start: %+v %v (want the VMM's pid)", st, err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second start: %v", err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("delete running: %v", err)
	}
	fv.agent.exitCh(&api.ProcessRef{ContainerId: "c1"}) <- 3
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != 3 {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "c1", Signal: 9}); status.Code(err) != codes.NotFound {
		t.Errorf("kill exited: %v", err)
	}
	d, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
	if err != nil || d.ExitStatus != 3 {
		t.Fatalf("delete: %+v %v", d, err)
	}
	if !fv.killed {
		t.Error("the VM outlived its last container")
	}
	got := rec.wait(t, 4)
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
	if e := rec.msgs[2].(*eventstypes.TaskExit); e.ExitStatus != 3 || e.ContainerID != "c1" {
		t.Errorf("exit event %+v", e)
	}
}

func TestVMDeathEndsProcesses(t *testing.T) {
	s, fv, rec, b := newTestService(t)
	ctx := context.Background()
	create(t, s, b, "c1")
	s.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
	fv.once.Do(func() { close(fv.done) })
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != ExitVMDied {
		t.Fatalf("wait: %+v %v", w, err)
	}
	if got := rec.wait(t, 3); len(got) != 3 || got[2] != "/tasks/exit" {
		t.Errorf("events %v", got)
	}
}

func TestKillHungGuest(t *testing.T) {
	s, fv, _, b := newTestService(t)
	ctx := context.Background()
	create(t, s, b, "c1")
	s.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
	fv.agent.hung = true
	kctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.Kill(kctx, &taskAPI.KillRequest{ID: "c1", Signal: 9}); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if !fv.killed {
		t.Fatal("the hung VM was not killed")
	}
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != ExitKilled {
		t.Fatalf("wait: %+v %v", w, err)
	}
}

func TestSecondContainerNeedsHotAttach(t *testing.T) {
	s, _, _, b := newTestService(t)
	create(t, s, b, "c1")
	bundle, img, _ := cut(b)
	_, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c2", Bundle: bundle, Rootfs: []*typesMount{{Type: "ext4", Source: img}}})
	if status.Code(err) != codes.Unimplemented || !errors.Is(vm.ErrNoHotAttach, vm.ErrNoHotAttach) {
		t.Errorf("second container: %v, want Unimplemented", err)
	}
	if _, err := s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate: %v", err)
	}
}

func TestOOMEvents(t *testing.T) {
	tests := []struct {
		name    string
		oomMode string
		// run drives the container after Start: OOM kills and exits.
		run  func(t *testing.T, a *fakeAgent, rec *recorder)
		want []string
	}{
		{"init killed, the watcher first", "", func(t *testing.T, a *fakeAgent, rec *recorder) {
			a.oomKill("c1")
			rec.wait(t, 3)
			a.exitCh(&api.ProcessRef{ContainerId: "c1"}) <- 137
		}, []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit"}},
		{"init killed, the exit reports it", "late", func(t *testing.T, a *fakeAgent, rec *recorder) {
			a.oomKill("c1")
			a.exitCh(&api.ProcessRef{ContainerId: "c1"}) <- 137
		}, []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/exit"}},
		{"a child killed, the container runs on", "", func(t *testing.T, a *fakeAgent, rec *recorder) {
			a.oomKill("c1")
			rec.wait(t, 3)
			a.oomKill("c1")
			rec.wait(t, 4)
			a.exitCh(&api.ProcessRef{ContainerId: "c1"}) <- 0
		}, []string{"/tasks/create", "/tasks/start", "/tasks/oom", "/tasks/oom", "/tasks/exit"}},
		{"agent without WaitOOM", "old", func(t *testing.T, a *fakeAgent, rec *recorder) {
			a.exitCh(&api.ProcessRef{ContainerId: "c1"}) <- 137
		}, []string{"/tasks/create", "/tasks/start", "/tasks/exit"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, fv, rec, b := newTestService(t)
			fv.agent.oomMode = tc.oomMode
			ctx := context.Background()
			create(t, s, b, "c1")
			if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
				t.Fatal(err)
			}
			rec.wait(t, 2)
			tc.run(t, fv.agent, rec)
			if _, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"}); err != nil {
				t.Fatal(err)
			}
			rec.wait(t, len(tc.want))
			// Nothing more may follow (a second TaskOOM for one kill).
			time.Sleep(50 * time.Millisecond)
			rec.mu.Lock()
			got := append([]string(nil), rec.topics...)
			rec.mu.Unlock()
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("events %v, want %v", got, tc.want)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			for i, topic := range got {
				if e, ok := rec.msgs[i].(*eventstypes.TaskOOM); topic == "/tasks/oom" && (!ok || e.ContainerID != "c1") {
					t.Errorf("event %d: %#v, want TaskOOM of c1", i, rec.msgs[i])
				}
			}
		})
	}
}

func TestFlushBeforeExit(t *testing.T) {
	// The shim exits right after the last Delete (containerd's Shutdown):
	// its TaskDelete must reach containerd first, however slowly
	// events are forwarded.
	s, fv, rec, b := newTestService(t)
	rec.delay.Store(int64(30 * time.Millisecond))
	ctx := context.Background()
	create(t, s, b, "c1")
	s.Start(ctx, &taskAPI.StartRequest{ID: "c1"})
	fv.agent.exitCh(&api.ProcessRef{ContainerId: "c1"}) <- 0
	if _, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if !s.flush(5 * time.Second) {
		t.Fatal("flush timed out")
	}
	rec.mu.Lock()
	got := strings.Join(rec.topics, " ")
	rec.mu.Unlock()
	if want := "/tasks/create /tasks/start /tasks/exit /tasks/delete"; got != want {
		t.Errorf("published before the flush returned: %s, want %s", got, want)
	}
	// A stuck publisher does not hold the exit for ever.
	rec.delay.Store(int64(time.Hour))
	s.publish("/tasks/never", &eventstypes.TaskOOM{ContainerID: "c1"})
	s.publish("/tasks/never", &eventstypes.TaskOOM{ContainerID: "c1"})
	if s.flush(50 * time.Millisecond) {
		t.Error("flush behind a stuck publisher returned true")
	}
}
