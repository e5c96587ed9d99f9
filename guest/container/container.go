package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"

	"github.com/embervm/ember/guest/cgroups"
	"github.com/embervm/ember/guest/reaper"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Container is one container in the VM: its own mount, pid, uts and ipc
// namespaces, its rootfs, its init process and its exec processes.
type Container struct {
	id      string
	spec    *specs.Spec
	bundle  string // the agent's state directory for it
	group   *cgroups.Group
	pidNS   string
	spawner *spawner
	log     *slog.Logger

	init *Process
	conn *initConn // to the init child, until it exec'd

	startMu sync.Mutex // serializes Start
	mu      sync.Mutex
	state   State
	execs   map[string]*Process
}

// ID is the container's id.
func (c *Container) ID() string { return c.id }

// State is the current state. A container whose init was reaped is
// Stopped, even if watch has not run yet.
func (c *Container) State() State {
	if c.init.Exited() {
		_ = c.setState(Stopped)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Init is the container's own process.
func (c *Container) Init() *Process { return c.init }

// setState moves to state to, if that is a legal transition.
func (c *Container) setState(to State) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == to {
		return nil
	}
	if err := transition(c.state, to); err != nil {
		return err
	}
	c.log.Debug("container state", "id", c.id, "from", c.state, "to", to)
	c.state = to
	return nil
}

// watch marks the container stopped when its init exits. The kernel then
// kills every other process of its pid namespace.
func (c *Container) watch() {
	<-c.init.Done()
	st := c.init.waiter.Status()
	c.log.Info("container exited", "id", c.id, "pid", st.Pid, "status", st.Code)
	_ = c.setState(Stopped)
	// Not while Start reads its answer from the connection.
	c.startMu.Lock()
	c.conn.close()
	c.startMu.Unlock()
}

// Start lets the init exec the user's program. A failed exec (the binary
// vanished, permission denied) is returned; the container is then stopped.
func (c *Container) Start(ctx context.Context) error {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if s := c.State(); s != Created {
		return fmt.Errorf("start %s: %w", c.id, transition(s, Running))
	}
	if err := c.conn.send(initStart{Start: true}); err != nil {
		return fmt.Errorf("start %s: %w", c.id, err)
	}
	r, err := c.conn.recv(ctx)
	switch {
	case errors.Is(err, io.EOF):
		// Closed on exec: the program runs (and may have exited already).
		c.conn.close()
		if err := c.setState(Running); err != nil && c.State() != Stopped {
			return err
		}
		return nil
	case err != nil:
		return fmt.Errorf("start %s: %w", c.id, err)
	case r.Type == replyError:
		_, _ = c.init.Wait(ctx)
		return fmt.Errorf("start %s: %w", c.id, r.asError())
	default:
		return fmt.Errorf("start %s: unexpected reply %q: %w", c.id, r.Type, ErrSetup)
	}
}

// Exec starts proc in the running container.
func (c *Container) Exec(ctx context.Context, execID string, proc *specs.Process, stdin bool) (_ *Process, err error) {
	if err := validateID(execID); err != nil {
		return nil, err
	}
	if err := validateProcess(proc); err != nil {
		return nil, err
	}
	if s := c.State(); s != Running {
		return nil, fmt.Errorf("exec in %s (%s): %w", c.id, s, ErrInvalidState)
	}
	c.mu.Lock()
	if _, ok := c.execs[execID]; ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("exec %s in %s: %w", execID, c.id, ErrExists)
	}
	c.execs[execID] = nil // reserved
	c.mu.Unlock()
	defer func() {
		if err != nil {
			c.mu.Lock()
			delete(c.execs, execID)
			c.mu.Unlock()
		}
	}()

	files, cfg, err := c.execFiles(proc)
	if err != nil {
		return nil, err
	}
	defer closeAll(files)
	pio, err := newStdio(stdin, proc.Terminal, proc.ConsoleSize)
	if err != nil {
		return nil, err
	}
	defer pio.closeChild()
	exp := c.spawner.reaper.Expect()
	defer exp.Close()
	helper, conn, err := c.spawner.start(cfg, pio, files, 0, false)
	if err != nil {
		pio.close()
		return nil, err
	}
	defer conn.close()
	r, err := expectReply(ctx, conn, helper, replyStarted)
	if err != nil {
		pio.close()
		return nil, fmt.Errorf("exec %s in %s: %w", execID, c.id, err)
	}
	p := newProcess(execID, exp.Register(r.Pid), pio)
	// The helper exits right after the fork.
	if _, err := helper.Wait(ctx); err != nil {
		c.log.Warn("exec helper did not exit", "id", c.id, "exec", execID, "err", err)
	}
	c.mu.Lock()
	c.execs[execID] = p
	c.mu.Unlock()
	return p, nil
}

// execFiles opens what the exec helper needs: the container's namespaces,
// its root and its cgroup.
func (c *Container) execFiles(proc *specs.Process) ([]*os.File, *initConfig, error) {
	cfg := &initConfig{Mode: modeExec, ID: c.id, Process: proc, Terminal: proc.Terminal}
	var files []*os.File
	fail := func(err error) ([]*os.File, *initConfig, error) {
		closeAll(files)
		return nil, nil, fmt.Errorf("exec in %s: %w", c.id, err)
	}
	for _, ns := range []string{"ipc", "uts", "pid", "mnt"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", c.init.pid, ns))
		if err != nil {
			return fail(err)
		}
		cfg.NsFds = append(cfg.NsFds, nsFd{Type: ns, Fd: firstExtraF + len(files)})
		files = append(files, f)
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root", c.init.pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(os.NewSyscallError("open container root", err))
	}
	cfg.RootFd = firstExtraF + len(files)
	files = append(files, os.NewFile(uintptr(fd), "root"))
	if c.group != nil {
		f, err := c.group.OpenProcs()
		if err != nil {
			return fail(err)
		}
		cfg.HasCgroup = true
		cfg.CgroupFd = firstExtraF + len(files)
		files = append(files, f)
	}
	return files, cfg, nil
}

// Process returns the container's process (execID "") or an exec process.
func (c *Container) Process(execID string) (*Process, error) {
	if execID == "" {
		return c.init, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.execs[execID]
	if p == nil {
		return nil, fmt.Errorf("process %s in %s: %w", execID, c.id, ErrNotFound)
	}
	return p, nil
}

// DeleteProcess forgets an exited exec process and releases its stdio.
func (c *Container) DeleteProcess(execID string) error {
	p, err := c.Process(execID)
	if err != nil {
		return err
	}
	if execID == "" {
		return fmt.Errorf("delete the container's own process: %w", ErrInvalidState)
	}
	if !p.Exited() {
		return fmt.Errorf("delete process %s: still running: %w", execID, ErrInvalidState)
	}
	c.mu.Lock()
	delete(c.execs, execID)
	c.mu.Unlock()
	p.release()
	return nil
}

// Pids lists the container's processes (agent-visible pids), sorted.
func (c *Container) Pids() ([]int, error) {
	var pids []int
	var err error
	if c.group != nil {
		pids, err = c.group.Pids()
	} else {
		pids, err = pidsInNamespace(c.pidNS)
	}
	sort.Ints(pids)
	return pids, err
}

// Stats reports resource use, and where it came from ("cgroup2" or
// "procfs").
func (c *Container) Stats() (cgroups.Stats, string, error) {
	if c.group != nil {
		s, err := c.group.Stats()
		return s, "cgroup2", err
	}
	pids, err := c.Pids()
	if err != nil {
		return cgroups.Stats{}, "procfs", err
	}
	return procStats(pids), "procfs", nil
}

// Update applies new resource limits.
func (c *Container) Update(r *specs.LinuxResources) error {
	if c.group == nil {
		return fmt.Errorf("update resources of %s: no cgroup v2 in this guest: %w", c.id, ErrUnsupported)
	}
	return c.group.Update(r)
}

// kill sends SIGKILL to the init (and so to the whole pid namespace).
func (c *Container) kill() {
	if !c.init.Exited() {
		_ = unix.Kill(c.init.pid, unix.SIGKILL)
	}
}

// release frees what the container holds in the agent once it stopped.
func (c *Container) release() error {
	c.mu.Lock()
	procs := []*Process{c.init}
	for _, p := range c.execs {
		if p != nil {
			procs = append(procs, p)
		}
	}
	c.execs = map[string]*Process{}
	c.mu.Unlock()
	for _, p := range procs {
		p.release()
	}
	var errs []error
	if c.group != nil {
		errs = append(errs, c.group.Destroy())
	}
	// Nothing is mounted here in the agent's namespace (the rootfs was
	// mounted in the container's), so these are empty directories.
	for _, d := range []string{c.bundle + "/rootfs", c.bundle} {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// newContainerFromInit is what Manager.create assembles.
func newContainer(id string, spec *specs.Spec, bundle string, group *cgroups.Group, sp *spawner, log *slog.Logger, w *reaper.Waiter, conn *initConn, io *stdio) *Container {
	return &Container{
		id: id, spec: spec, bundle: bundle, group: group, spawner: sp, log: log,
		init: newProcess("", w, io), conn: conn, state: Created,
		execs: map[string]*Process{},
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
