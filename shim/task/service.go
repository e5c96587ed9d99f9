// Package task is the containerd task service (containerd.task.v3.Task)
// of the ember shim: it runs a pod's containers in one VM and translates
// the task API into guest agent calls (guest/api).
//
// One shim process serves one pod (containers sharing the
// io.kubernetes.cri.sandbox-id annotation) or one lone container, so one
// Service owns at most one VM. The VM starts with the first container's
// Create, whose rootfs becomes its first drive, and ends when the last
// container is deleted.
package task

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/shim/config"
	"github.com/embervm/ember/shim/network"
	"github.com/embervm/ember/shim/process"
	"github.com/embervm/ember/shim/rootfs"
	"github.com/embervm/ember/shim/stdio"
	"github.com/embervm/ember/shim/vm"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var (
	_     = shim.TTRPCService(&Service{})
	_     = taskAPI.TTRPCTaskService(&Service{})
	empty = &ptypes.Empty{}
)

// Exit statuses the shim reports itself.
const (
	// ExitVMDied is the status of every process whose VM ended under it
	// (VMM crash, guest panic or power-off).
	ExitVMDied = 255
	// ExitKilled is the status of processes of a VM the shim killed
	// because the agent did not answer a SIGKILL.
	ExitKilled = 128 + uint32(syscall.SIGKILL)
)

// Timeouts of agent calls that must not hang the task API.
const (
	signalTimeout = 5 * time.Second
	drainTimeout  = 5 * time.Second
	// flushTimeout bounds how long the shim's exit waits for queued
	// events to reach containerd.
	flushTimeout = 2 * time.Second
	stdinDrain   = 2 * time.Second
)

// Sandbox is the VM as the service uses it (vm.VM; fakes in tests).
type Sandbox interface {
	Agent() vm.Agent
	Pid() int
	Done() <-chan struct{}
	Err() error
	// Devices are the guest devices of the drives the VM started with.
	Devices() []string
	// AttachDrive attaches a drive to the running VM (a spare slot) and
	// returns its guest device; DetachDrive releases it.
	AttachDrive(ctx context.Context, d rootfs.Drive) (string, error)
	DetachDrive(ctx context.Context, device string) error
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Kill()
}

// Options configure a Service.
type Options struct {
	// LoadConfig returns the shim configuration (default: config.Load of
	// config.Path()).
	LoadConfig func() (config.Config, error)
	// StartVM starts a VM (default: vm.Start).
	StartVM func(ctx context.Context, spec vm.Spec) (Sandbox, error)
	// Cleanup removes a VM's state directory (default: vm.Cleanup).
	Cleanup func(dir string, cfg config.Config)
}

// Service is the task service.
type Service struct {
	ctx    context.Context
	cancel context.CancelFunc
	pub    events.Publisher
	sd     shutdown.Service
	opts   Options
	events chan event

	mu         sync.Mutex
	cfg        *config.Config
	cache      *rootfs.Cache
	sandbox    Sandbox
	vmDir      string
	pod        podContext // what the VM's containers take from the pod
	containers map[string]*container
}

type event struct {
	topic string
	msg   any
	// flushed, if set, marks a flush: closed once every event queued
	// before it was published.
	flushed chan struct{}
}

type container struct {
	id, bundle string
	spec       *specs.Spec
	drive      rootfs.Drive
	// device is the rootfs drive in the guest; attached says it was
	// attached to the running VM (a spare slot), to release on Delete.
	device   string
	attached bool
	init     *proc
	execs    map[string]*proc

	// oomMu guards oomKills, the agent's OOM-kill count of the container
	// that TaskOOM events were published for.
	oomMu    sync.Mutex
	oomKills uint64
}

// proc is a process with its streams.
type proc struct {
	*process.Process
	spec    *specs.Process // exec processes
	streams *stdio.Streams
	// lifecycle serializes Start against the exit watcher, so TaskExit is
	// published after TaskStart.
	lifecycle sync.Mutex
	pumps     sync.WaitGroup
	stdinDone chan struct{}
	stdinOnce sync.Once
}

func (p *proc) ref() *api.ProcessRef {
	return &api.ProcessRef{ContainerId: p.ContainerID, ExecId: p.ExecID}
}

// New returns a task service publishing to pub; sd shuts the shim down.
func New(ctx context.Context, pub events.Publisher, sd shutdown.Service, opts Options) *Service {
	if opts.LoadConfig == nil {
		opts.LoadConfig = func() (config.Config, error) { return config.Load(config.Path()) }
	}
	if opts.StartVM == nil {
		opts.StartVM = func(ctx context.Context, spec vm.Spec) (Sandbox, error) { return vm.Start(ctx, spec) }
	}
	if opts.Cleanup == nil {
		opts.Cleanup = vm.Cleanup
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Service{ctx: ctx, cancel: cancel, pub: pub, sd: sd, opts: opts,
		events: make(chan event, 128), containers: map[string]*container{}}
	go s.forward()
	if sd != nil {
		sd.RegisterCallback(func(context.Context) error {
			s.teardown(context.Background())
			// The last Delete's TaskDelete may still be queued: the
			// process exits once the callbacks return.
			s.flush(flushTimeout)
			return nil
		})
	}
	return s
}

// RegisterTTRPC registers the task API.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// forward publishes events one at a time, in the order they were queued.
func (s *Service) forward() {
	ns, _ := namespaces.Namespace(s.ctx)
	ctx := namespaces.WithNamespace(context.Background(), ns)
	for e := range s.events {
		if e.flushed != nil {
			close(e.flushed)
			continue
		}
		if s.pub == nil {
			continue
		}
		if err := s.pub.Publish(ctx, e.topic, e.msg); err != nil {
			log.G(ctx).WithError(err).Warnf("publish %s", e.topic)
		}
	}
}

func (s *Service) publish(topic string, msg any) { s.events <- event{topic: topic, msg: msg} }

// flush waits until the events queued so far were published, or timeout.
func (s *Service) flush(timeout time.Duration) bool {
	done := make(chan struct{})
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case s.events <- event{flushed: done}:
	case <-t.C:
		return false
	}
	select {
	case <-done:
		return true
	case <-t.C:
		log.G(s.ctx).Warnf("events not published within %v of the shim's exit", timeout)
		return false
	}
}

func (s *Service) getContainer(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, errNotFound)
	}
	return c, nil
}

func (s *Service) getProcess(id, execID string) (*container, *proc, error) {
	c, err := s.getContainer(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return c, c.init, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := c.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %s in %s: %w", execID, id, errNotFound)
	}
	return c, p, nil
}

func (s *Service) agent() (vm.Agent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sandbox == nil {
		return nil, fmt.Errorf("%w: no VM", vm.ErrDied)
	}
	return s.sandbox.Agent(), nil
}

// vmID is the pod's VM name: the sandbox id, else the container's id.
func vmID(id string, spec *specs.Spec) string {
	if sb := spec.Annotations["io.kubernetes.cri.sandbox-id"]; sb != "" {
		return sb
	}
	return id
}

// Create creates a container: its rootfs drive, the VM if it is the pod's
// first, and the container in the guest (state created).
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	start := time.Now()
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.containers[r.ID]; ok {
		return nil, fmt.Errorf("container %s: %w", r.ID, errAlreadyExists)
	}
	if s.cfg == nil {
		c, err := s.opts.LoadConfig()
		if err != nil {
			return nil, err
		}
		s.cfg = &c
		s.cache = &rootfs.Cache{Dir: c.CacheDir}
	}
	cfg, err := s.cfg.WithAnnotations(spec.Annotations)
	if err != nil {
		return nil, err
	}
	ns, _ := namespaces.Namespace(ctx)
	id := vmID(r.ID, spec)
	vmDir := s.vmDir
	if vmDir == "" {
		h := sha256.Sum256([]byte(ns + "/" + id))
		vmDir = filepath.Join(cfg.StateDir, hex.EncodeToString(h[:8]))
	}
	workDir := filepath.Join(vmDir, "c-"+shortHash(r.ID))
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, err
	}
	mounts := make([]rootfs.Mount, 0, len(r.Rootfs))
	for _, m := range r.Rootfs {
		mounts = append(mounts, rootfs.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
	}
	if len(mounts) == 0 && spec.Root != nil {
		root := spec.Root.Path
		if !filepath.IsAbs(root) {
			root = filepath.Join(r.Bundle, root)
		}
		mounts = append(mounts, rootfs.Mount{Type: "bind", Source: root})
	}
	tRootfs := time.Now()
	drive, res, err := s.cache.Prepare(ctx, mounts, workDir)
	if err != nil {
		os.RemoveAll(workDir)
		return nil, err
	}
	dRootfs := time.Since(tRootfs)
	logger := log.G(ctx).WithField("id", r.ID)
	logger.Infof("rootfs: %s in %v (mkfs %v, copy %v, key %q)", res.Kind, dRootfs.Round(time.Millisecond),
		res.Build.Round(time.Millisecond), res.Copy.Round(time.Millisecond), res.Key)
	cleanupDrive := func() { rootfs.Cleanup(drive); os.RemoveAll(workDir) }

	var device string
	newVM := s.sandbox == nil
	tVM := time.Now()
	if newVM {
		// A pod network (CNI set up in the namespace the spec names, as
		// the CRI plugin does) goes to the VM.
		var podNet *network.Pod
		if path := network.NetNSFromSpec(spec); path != "" {
			if podNet, err = network.Discover(path); err != nil {
				cleanupDrive()
				return nil, err
			}
		}
		pod := podContext{Hostname: spec.Hostname}
		if podNet != nil {
			// The CRI's resolv.conf for the pod (a host file) becomes
			// the guest's, which the pod's containers bind.
			dns, err := podDNS(spec)
			if err != nil {
				log.G(ctx).WithError(err).Warn("the pod's DNS settings do not reach the VM")
			}
			if len(dns.Servers) > 0 {
				podNet.DNS, pod.ResolvConf = dns, guestResolvConf
			}
		}
		sb, err := s.opts.StartVM(ctx, vm.Spec{ID: id, Dir: vmDir, Config: cfg, Drives: []rootfs.Drive{drive}, Network: podNet})
		if err != nil {
			cleanupDrive()
			s.opts.Cleanup(vmDir, cfg)
			return nil, err
		}
		s.sandbox, s.vmDir, s.pod = sb, vmDir, pod
		device = sb.Devices()[0]
		go s.watchVM(sb)
	} else {
		if device, err = s.sandbox.AttachDrive(ctx, drive); err != nil {
			cleanupDrive()
			return nil, fmt.Errorf("container %s joins VM %s: %w", r.ID, id, err)
		}
	}
	dVM := time.Since(tVM)
	failed := func() {
		if !newVM {
			s.sandbox.DetachDrive(context.WithoutCancel(ctx), device)
		}
		cleanupDrive()
		if newVM && len(s.containers) == 0 {
			s.sandbox.Kill()
			s.opts.Cleanup(vmDir, cfg)
			s.sandbox, s.vmDir, s.pod = nil, "", podContext{}
		}
	}

	gspec, dropped, err := guestSpec(spec, s.pod)
	if err != nil {
		failed()
		return nil, err
	}
	if len(dropped) > 0 {
		logger.Infof("mounts not available in the VM, dropped: %v", dropped)
	}
	p := &proc{Process: process.New(r.ID, ""), stdinDone: make(chan struct{})}
	p.Stdin, p.Stdout, p.Stderr, p.Terminal = r.Stdin, r.Stdout, r.Stderr, r.Terminal
	streams, err := stdio.Open(ctx, ns, r.ID, stdio.Paths{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal})
	if err != nil {
		failed()
		return nil, err
	}
	p.streams = streams
	tAgent := time.Now()
	resp, err := s.sandbox.Agent().CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: r.ID,
		OciSpec:     gspec,
		Rootfs:      &api.Rootfs{Source: device, Fstype: drive.FSType, Readonly: drive.ReadOnly},
		Stdio:       &api.Stdio{Stdin: r.Stdin != ""},
	})
	if err != nil {
		streams.Close()
		failed()
		return nil, fmt.Errorf("create %s in the VM: %w", r.ID, err)
	}
	// containerd sees the VMM's pid for every process of the VM (guest
	// pids mean nothing on the host); the guest's are in Pids and logs.
	p.SetPid(s.hostPid())
	logger.Debugf("guest pid %d", resp.Pid)
	c := &container{id: r.ID, bundle: r.Bundle, spec: spec, drive: drive, device: device, attached: !newVM,
		init: p, execs: map[string]*proc{}}
	s.containers[r.ID] = c
	s.startPumps(s.sandbox.Agent(), p)
	go s.waitExit(c, p)
	go s.watchOOM(s.sandbox.Agent(), c)
	logger.Infof("created in %v: rootfs %v, vm %v (new %v), agent create %v",
		time.Since(start).Round(time.Millisecond), dRootfs.Round(time.Millisecond), dVM.Round(time.Millisecond), newVM,
		time.Since(tAgent).Round(time.Millisecond))

	s.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         p.Pid(),
	})
	return &taskAPI.CreateTaskResponse{Pid: p.Pid()}, nil
}

// hostPid is the pid containerd sees for the VM's processes: the VMM's
// (as Kata reports its hypervisor's). It runs in its own network
// namespace, so /proc/PID/ns/net never names the host's.
func (s *Service) hostPid() uint32 {
	if s.sandbox == nil {
		return 0
	}
	return uint32(s.sandbox.Pid())
}

// guestResolvConf is where the agent writes the DNS settings of
// ConfigureNetwork.
const guestResolvConf = "/etc/resolv.conf"

// podDNS reads the resolv.conf the spec binds (the CRI writes one per pod
// from its DNS config); without one there are no settings.
func podDNS(spec *specs.Spec) (network.DNS, error) {
	src := bindSource(spec, resolvConf)
	if src == "" {
		return network.DNS{}, nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return network.DNS{}, fmt.Errorf("pod resolv.conf: %w", err)
	}
	return network.ParseResolvConf(b), nil
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("bundle config.json: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return &spec, nil
}

// startPumps copies the process's output from the agent to containerd's
// streams and its stdin to the agent.
func (s *Service) startPumps(a vm.Agent, p *proc) {
	st := p.streams
	if st.Stdout != nil {
		p.pumps.Add(1)
		go s.pumpOut(a.ReadStdout, p, st.Stdout)
	}
	if st.Stderr != nil && !p.Terminal {
		p.pumps.Add(1)
		go s.pumpOut(a.ReadStderr, p, st.Stderr)
	}
	if st.Stdin != nil {
		go s.pumpIn(a, p)
	} else {
		close(p.stdinDone)
	}
}

func (s *Service) pumpOut(read func(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error), p *proc, w interface {
	Write([]byte) (int, error)
	Close() error
}) {
	defer p.pumps.Done()
	defer w.Close()
	writeOK := true
	for {
		resp, err := read(s.ctx, &api.ReadStreamRequest{Process: p.ref(), MaxBytes: 64 << 10})
		if err != nil {
			return
		}
		if len(resp.Data) > 0 && writeOK {
			// A reader that went away must not block the process: keep
			// draining the agent, drop the data.
			if _, err := w.Write(resp.Data); err != nil {
				writeOK = false
			}
		}
		if resp.Eof {
			return
		}
	}
}

func (s *Service) pumpIn(a vm.Agent, p *proc) {
	defer close(p.stdinDone)
	buf := make([]byte, 32<<10)
	for {
		n, err := p.streams.Stdin.Read(buf)
		if n > 0 {
			if _, werr := a.WriteStdin(s.ctx, &api.WriteStdinRequest{Process: p.ref(), Data: buf[:n]}); werr != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	s.closeStdin(a, p)
}

func (s *Service) closeStdin(a vm.Agent, p *proc) {
	p.stdinOnce.Do(func() {
		if _, err := a.CloseStdin(s.ctx, &api.CloseStdinRequest{Process: p.ref()}); err != nil {
			log.G(s.ctx).WithError(err).Debugf("close stdin of %s/%s", p.ContainerID, p.ExecID)
		}
	})
}

// waitExit waits for the process in the guest, lets its output drain and
// publishes TaskExit.
func (s *Service) waitExit(c *container, p *proc) {
	a, err := s.agent()
	if err != nil {
		return
	}
	resp, err := a.WaitProcess(s.ctx, &api.WaitProcessRequest{Process: p.ref()})
	if err != nil {
		// The VM is gone (watchVM reports the exit) or the shim stops.
		log.G(s.ctx).WithError(err).Debugf("wait %s/%s", p.ContainerID, p.ExecID)
		return
	}
	drained := make(chan struct{})
	go func() { p.pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
		log.G(s.ctx).Warnf("output of %s/%s not drained after %v", p.ContainerID, p.ExecID, drainTimeout)
	}
	at := time.Unix(0, resp.ExitedAtUnixNano)
	if resp.ExitedAtUnixNano == 0 {
		at = time.Now()
	}
	// An OOM kill that ended the process is in the count (the kernel
	// counts it before the SIGKILL): TaskOOM goes out before TaskExit,
	// as containerd expects, whether or not watchOOM saw it yet.
	s.oomKilled(c, resp.OomKills)
	s.exited(p, process.Exit{Status: resp.ExitStatus, At: at})
}

// watchOOM publishes TaskOOM whenever the kernel's OOM killer kills a
// process of the container, until the container stops (or is removed, or
// the VM ends). An agent without OOM events (no cgroup v2, an older
// agent) ends it at once.
func (s *Service) watchOOM(a vm.Agent, c *container) {
	for {
		c.oomMu.Lock()
		after := c.oomKills
		c.oomMu.Unlock()
		resp, err := a.WaitOOM(s.ctx, &api.WaitOOMRequest{ContainerId: c.id, AfterOomKills: after})
		if err != nil {
			log.G(s.ctx).WithError(err).Debugf("no more OOM events of %s", c.id)
			return
		}
		s.oomKilled(c, resp.OomKills)
		if resp.Stopped || resp.OomKills <= after {
			return
		}
	}
}

// oomKilled publishes TaskOOM if the container's OOM-kill count n is more
// than was published.
func (s *Service) oomKilled(c *container, n uint64) {
	c.oomMu.Lock()
	defer c.oomMu.Unlock()
	if n <= c.oomKills {
		return
	}
	c.oomKills = n
	log.G(s.ctx).WithField("id", c.id).Warnf("OOM kill in the container (%d so far)", n)
	s.publish(runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: c.id})
}

// exited records an exit and publishes TaskExit once.
func (s *Service) exited(p *proc, e process.Exit) {
	p.lifecycle.Lock()
	defer p.lifecycle.Unlock()
	if !p.SetExited(e) {
		return
	}
	id := p.ExecID
	if id == "" {
		id = p.ContainerID
	}
	s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: p.ContainerID,
		ID:          id,
		Pid:         p.Pid(),
		ExitStatus:  e.Status,
		ExitedAt:    protobuf.ToTimestamp(e.At),
	})
}

// watchVM ends every process when the VM dies.
func (s *Service) watchVM(sb Sandbox) {
	select {
	case <-sb.Done():
	case <-s.ctx.Done():
		return
	}
	s.mu.Lock()
	if s.sandbox != sb {
		s.mu.Unlock()
		return
	}
	var procs []*proc
	for _, c := range s.containers {
		for _, e := range c.execs {
			procs = append(procs, e)
		}
		procs = append(procs, c.init)
	}
	s.mu.Unlock()
	if len(procs) > 0 {
		log.G(s.ctx).WithError(sb.Err()).Errorf("the VM ended; its %d process(es) exit with status %d", len(procs), ExitVMDied)
	}
	now := time.Now()
	for _, p := range procs {
		s.exited(p, process.Exit{Status: ExitVMDied, At: now})
	}
}

// Start starts the container's process or an exec process.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (_ *taskAPI.StartResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	a, err := s.agent()
	if err != nil {
		return nil, err
	}
	p.lifecycle.Lock()
	defer p.lifecycle.Unlock()
	if err := p.Check(process.EventStart); err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		resp, err := a.StartContainer(ctx, &api.StartContainerRequest{ContainerId: r.ID})
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", r.ID, err)
		}
		log.G(ctx).WithField("id", r.ID).Debugf("started, guest pid %d", resp.Pid)
		if err := p.Transition(process.EventStart); err != nil {
			return nil, err
		}
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: p.Pid()})
		return &taskAPI.StartResponse{Pid: p.Pid()}, nil
	}
	pj, err := json.Marshal(p.spec)
	if err != nil {
		return nil, err
	}
	resp, err := a.ExecProcess(ctx, &api.ExecProcessRequest{
		ContainerId: r.ID, ExecId: r.ExecID, OciProcess: pj, Stdio: &api.Stdio{Stdin: p.Stdin != ""},
	})
	if err != nil {
		return nil, fmt.Errorf("exec %s in %s: %w", r.ExecID, r.ID, err)
	}
	p.SetPid(c.init.Pid()) // the VMM's, set in Create under s.mu
	log.G(ctx).WithField("id", r.ID).Debugf("exec %s: guest pid %d", r.ExecID, resp.Pid)
	if err := p.Transition(process.EventStart); err != nil {
		return nil, err
	}
	s.startPumps(a, p)
	go s.waitExit(c, p)
	s.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: p.Pid()})
	return &taskAPI.StartResponse{Pid: p.Pid()}, nil
}

// Delete deletes an exited (or never started) process; deleting the last
// container ends the VM.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (_ *taskAPI.DeleteResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if err := p.Check(process.EventDelete); err != nil {
		return nil, err
	}
	a, aerr := s.agent()
	if p.Status() == process.Created && aerr == nil {
		// Never started: the guest process waits in its namespaces.
		if r.ExecID == "" {
			a.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: r.ID, Force: true})
		}
		s.exited(p, process.Exit{Status: ExitKilled, At: time.Now()})
	}
	if err := p.Transition(process.EventDelete); err != nil {
		return nil, err
	}
	e, _ := p.Exited()
	if p.streams != nil {
		p.streams.Close()
	}
	resp := &taskAPI.DeleteResponse{Pid: p.Pid(), ExitStatus: e.Status, ExitedAt: protobuf.ToTimestamp(e.At)}
	if r.ExecID != "" {
		if aerr == nil {
			a.DeleteProcess(ctx, &api.DeleteProcessRequest{Process: p.ref()})
		}
		s.mu.Lock()
		delete(c.execs, r.ExecID)
		s.mu.Unlock()
		return resp, nil
	}
	if aerr == nil {
		if _, err := a.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: r.ID, Force: true}); err != nil {
			log.G(ctx).WithError(err).Debugf("remove %s in the VM", r.ID)
		}
	}
	for _, e := range c.execs {
		if e.streams != nil {
			e.streams.Close()
		}
	}
	if c.attached {
		s.mu.Lock()
		sb := s.sandbox
		s.mu.Unlock()
		if sb != nil {
			// The container's mount namespace is gone with its processes:
			// the slot is free for the pod's next container.
			if err := sb.DetachDrive(ctx, c.device); err != nil {
				log.G(ctx).WithError(err).Warnf("release the drive of %s", r.ID)
			}
		}
	}
	rootfs.Cleanup(c.drive)
	s.mu.Lock()
	delete(s.containers, r.ID)
	last := len(s.containers) == 0
	s.mu.Unlock()
	if last {
		s.teardown(ctx)
	}
	s.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: r.ID, Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt, ID: r.ID,
	})
	return resp, nil
}

// teardown ends the VM and removes its state directory. Every container
// is gone (or the shim is exiting), so there is nothing to stop gracefully.
func (s *Service) teardown(ctx context.Context) {
	s.mu.Lock()
	sb, dir, cfg := s.sandbox, s.vmDir, s.cfg
	s.sandbox, s.vmDir, s.pod = nil, "", podContext{}
	s.mu.Unlock()
	if sb == nil {
		return
	}
	t := time.Now()
	sb.Kill()
	s.opts.Cleanup(dir, *cfg)
	log.G(ctx).Infof("VM stopped and cleaned up in %v", time.Since(t).Round(time.Millisecond))
}

// Exec registers an exec process; Start runs it.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	c, err := s.getContainer(r.ID)
	if err != nil {
		return nil, err
	}
	if st := c.init.Status(); st != process.Running {
		return nil, fmt.Errorf("exec in a %s container: %w", st, errdefs.ErrFailedPrecondition)
	}
	v, err := typeurl.UnmarshalAny(r.Spec)
	if err != nil {
		return nil, fmt.Errorf("exec spec: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	ps, ok := v.(*specs.Process)
	if !ok {
		return nil, fmt.Errorf("exec spec is %T: %w", v, errdefs.ErrInvalidArgument)
	}
	ns, _ := namespaces.Namespace(ctx)
	streams, err := stdio.Open(ctx, ns, r.ID, stdio.Paths{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal})
	if err != nil {
		return nil, err
	}
	p := &proc{Process: process.New(r.ID, r.ExecID), spec: ps, streams: streams, stdinDone: make(chan struct{})}
	p.Stdin, p.Stdout, p.Stderr, p.Terminal = r.Stdin, r.Stdout, r.Stderr, r.Terminal
	s.mu.Lock()
	if _, dup := c.execs[r.ExecID]; dup {
		s.mu.Unlock()
		streams.Close()
		return nil, fmt.Errorf("exec %s: %w", r.ExecID, errAlreadyExists)
	}
	c.execs[r.ExecID] = p
	s.mu.Unlock()
	s.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return empty, nil
}

// ResizePty resizes a process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	a, err := s.agent()
	if err != nil {
		return nil, err
	}
	if _, err := a.ResizeTTY(ctx, &api.ResizeTTYRequest{Process: p.ref(), Rows: r.Height, Cols: r.Width}); err != nil {
		return nil, err
	}
	return empty, nil
}

// State reports a process's state.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (_ *taskAPI.StateResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	c, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	st := tasktypes.Status_UNKNOWN
	switch p.Status() {
	case process.Created:
		st = tasktypes.Status_CREATED
	case process.Running:
		st = tasktypes.Status_RUNNING
	case process.Paused:
		st = tasktypes.Status_PAUSED
	case process.Stopped, process.Deleted:
		st = tasktypes.Status_STOPPED
	}
	resp := &taskAPI.StateResponse{
		ID: p.ContainerID, ExecID: p.ExecID, Bundle: c.bundle, Pid: p.Pid(), Status: st,
		Stdin: p.Stdin, Stdout: p.Stdout, Stderr: p.Stderr, Terminal: p.Terminal,
	}
	if e, ok := p.Exited(); ok {
		resp.ExitStatus, resp.ExitedAt = e.Status, protobuf.ToTimestamp(e.At)
	}
	return resp, nil
}

// Pause pauses the container by pausing its VM (only for a VM that holds
// this one container: pausing would stop the pod's other containers too).
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	return s.pauseResume(ctx, r.ID, true)
}

// Resume resumes a paused container.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	return s.pauseResume(ctx, r.ID, false)
}

func (s *Service) pauseResume(ctx context.Context, id string, pause bool) (*ptypes.Empty, error) {
	c, err := s.getContainer(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sb, n := s.sandbox, len(s.containers)
	s.mu.Unlock()
	if sb == nil {
		return nil, fmt.Errorf("%w: no VM", vm.ErrDied)
	}
	if n > 1 {
		return nil, fmt.Errorf("pausing one container of a shared VM: %w", errdefs.ErrNotImplemented)
	}
	ev, do, topic := process.EventResume, sb.Resume, runtime.TaskResumedEventTopic
	var msg any = &eventstypes.TaskResumed{ContainerID: id}
	if pause {
		ev, do, topic = process.EventPause, sb.Pause, runtime.TaskPausedEventTopic
		msg = &eventstypes.TaskPaused{ContainerID: id}
	}
	c.init.lifecycle.Lock()
	defer c.init.lifecycle.Unlock()
	if err := c.init.Check(ev); err != nil {
		return nil, err
	}
	if err := do(ctx); err != nil {
		return nil, err
	}
	if err := c.init.Transition(ev); err != nil {
		return nil, err
	}
	s.publish(topic, msg)
	return empty, nil
}

// Kill signals a process (all of its group with r.All). A SIGKILL the
// agent does not acknowledge in time kills the VM: a hung guest must not
// make a container unkillable.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if _, done := p.Exited(); done {
		return nil, fmt.Errorf("kill %s: %w", r.ID, errFinished)
	}
	s.mu.Lock()
	sb := s.sandbox
	s.mu.Unlock()
	if sb == nil {
		return nil, fmt.Errorf("%w: no VM", vm.ErrDied)
	}
	if p.Status() == process.Paused && r.Signal == uint32(syscall.SIGKILL) {
		sb.Resume(ctx) // a paused VM cannot deliver the signal
	}
	kctx, cancel := context.WithTimeout(ctx, signalTimeout)
	defer cancel()
	_, err = sb.Agent().SignalProcess(kctx, &api.SignalProcessRequest{Process: p.ref(), Signal: r.Signal, Group: r.All})
	if err == nil {
		return empty, nil
	}
	if r.Signal == uint32(syscall.SIGKILL) && r.ExecID == "" && (kctx.Err() != nil || errors.Is(err, ttrpc.ErrClosed)) {
		log.G(ctx).WithError(err).Warnf("agent did not take SIGKILL for %s; killing the VM", r.ID)
		s.killVM(sb)
		return empty, nil
	}
	return nil, fmt.Errorf("signal %d to %s: %w", r.Signal, r.ID, err)
}

// killVM kills the VM and reports its processes killed.
func (s *Service) killVM(sb Sandbox) {
	s.mu.Lock()
	var procs []*proc
	for _, c := range s.containers {
		for _, e := range c.execs {
			procs = append(procs, e)
		}
		procs = append(procs, c.init)
	}
	s.mu.Unlock()
	now := time.Now()
	for _, p := range procs {
		s.exited(p, process.Exit{Status: ExitKilled, At: now})
	}
	sb.Kill()
}

// Pids lists the container's processes (guest pids).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (_ *taskAPI.PidsResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if _, err := s.getContainer(r.ID); err != nil {
		return nil, err
	}
	a, err := s.agent()
	if err != nil {
		return nil, err
	}
	resp, err := a.ListPids(ctx, &api.ListPidsRequest{ContainerId: r.ID})
	if err != nil {
		return nil, err
	}
	out := &taskAPI.PidsResponse{}
	for _, pid := range resp.Pids {
		out.Processes = append(out.Processes, &tasktypes.ProcessInfo{Pid: pid})
	}
	return out, nil
}

// CloseIO closes a process's stdin once what containerd wrote is through.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if !r.Stdin {
		return empty, nil
	}
	a, err := s.agent()
	if err != nil {
		return nil, err
	}
	select {
	case <-p.stdinDone:
	case <-time.After(stdinDrain):
		// The writer did not close its end: stop reading it.
		if p.streams != nil && p.streams.Stdin != nil {
			p.streams.Stdin.Close()
		}
	}
	s.closeStdin(a, p)
	return empty, nil
}

// Checkpoint is not supported (VM snapshots are taken with ember snapshot).
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, toGRPC(fmt.Errorf("checkpoint: %w", errdefs.ErrNotImplemented))
}

// Update changes the container's resource limits (linux.resources).
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if _, err := s.getContainer(r.ID); err != nil {
		return nil, err
	}
	v, err := typeurl.UnmarshalAny(r.Resources)
	if err != nil {
		return nil, fmt.Errorf("resources: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	res, ok := v.(*specs.LinuxResources)
	if !ok {
		return nil, fmt.Errorf("resources are %T: %w", v, errdefs.ErrInvalidArgument)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	a, err := s.agent()
	if err != nil {
		return nil, err
	}
	if _, err := a.UpdateResources(ctx, &api.UpdateResourcesRequest{ContainerId: r.ID, OciResources: b}); err != nil {
		return nil, err
	}
	return empty, nil
}

// Wait blocks until the process exits.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (_ *taskAPI.WaitResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	_, p, err := s.getProcess(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	e, err := p.Wait(ctx)
	if err != nil {
		return nil, err
	}
	return &taskAPI.WaitResponse{ExitStatus: e.Status, ExitedAt: protobuf.ToTimestamp(e.At)}, nil
}

// Stats reports the container's CPU, memory and pids as cgroup v2 metrics.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (_ *taskAPI.StatsResponse, retErr error) {
	defer func() { retErr = toGRPC(retErr) }()
	if _, err := s.getContainer(r.ID); err != nil {
		return nil, err
	}
	a, err := s.agent()
	if err != nil {
		return nil, err
	}
	st, err := a.Stats(ctx, &api.StatsRequest{ContainerId: r.ID})
	if err != nil {
		return nil, err
	}
	anyStats, err := typeurl.MarshalAnyToProto(metrics(st))
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: anyStats}, nil
}

// Connect returns the shim's and the container's pids.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	var pid uint32
	if c, err := s.getContainer(r.ID); err == nil {
		pid = c.init.Pid()
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: pid, Version: "ember"}, nil
}

// Shutdown ends the shim once it serves no container.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 {
		return empty, nil
	}
	s.teardown(ctx)
	if s.sd != nil {
		s.sd.Shutdown()
	}
	return empty, nil
}

// Close stops the service's goroutines (tests).
func (s *Service) Close() {
	s.teardown(context.Background())
	s.cancel()
}
