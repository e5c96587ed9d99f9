// Package container runs OCI containers inside the VM: each gets its rootfs
// from a block device (or a directory), its own mount, pid, uts and ipc
// namespaces, and its process started by re-executing the agent binary in a
// container-init mode (see RunInitIfRequested), which sets up the
// container's view and then execs the user's program.
package container

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/embervm/ember/guest/cgroups"
	"github.com/embervm/ember/guest/reaper"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Config configures a Manager.
type Config struct {
	// StateDir holds a directory per container (its rootfs mount point).
	StateDir string
	// Exe is the agent binary to re-execute ("/proc/self/exe").
	Exe string
	// Reaper collects exit statuses.
	Reaper *reaper.Reaper
	// Cgroups, if set, gives each container a cgroup v2; nil falls back
	// to procfs for stats and pids and refuses resource updates.
	Cgroups *cgroups.Hierarchy
	// Log is the logger (slog.Default if nil).
	Log *slog.Logger
}

// Manager is the table of the VM's containers.
type Manager struct {
	cfg     Config
	spawner *spawner
	log     *slog.Logger

	mu         sync.Mutex
	containers map[string]*Container // nil value: being created
}

// NewManager returns an empty Manager.
func NewManager(cfg Config) *Manager {
	if cfg.Exe == "" {
		cfg.Exe = "/proc/self/exe"
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	return &Manager{
		cfg:        cfg,
		spawner:    &spawner{exe: cfg.Exe, reaper: cfg.Reaper},
		log:        log,
		containers: map[string]*Container{},
	}
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("id %q (want %s): %w", id, idPattern, ErrInvalidSpec)
	}
	return nil
}

// CreateOptions describe a new container.
type CreateOptions struct {
	ID     string
	Spec   *specs.Spec
	Rootfs Rootfs
	// Stdin gives the process a stdin pipe (else /dev/null).
	Stdin bool
}

// Create sets up a container and leaves it Created: its init waits in the
// container's namespaces, with the rootfs and mounts in place and the
// program's binary found. Errors wrap ErrInvalidSpec, ErrSetup, ErrExec or
// ErrExecNotFound.
func (m *Manager) Create(ctx context.Context, o CreateOptions) (_ *Container, err error) {
	if err := validateID(o.ID); err != nil {
		return nil, err
	}
	if o.Spec == nil {
		return nil, fmt.Errorf("no spec: %w", ErrInvalidSpec)
	}
	if err := validateProcess(o.Spec.Process); err != nil {
		return nil, err
	}
	if o.Rootfs.Source == "" {
		return nil, fmt.Errorf("no rootfs source: %w", ErrInvalidSpec)
	}
	m.mu.Lock()
	if _, ok := m.containers[o.ID]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("container %s: %w", o.ID, ErrExists)
	}
	m.containers[o.ID] = nil
	m.mu.Unlock()
	defer func() {
		if err != nil {
			m.mu.Lock()
			delete(m.containers, o.ID)
			m.mu.Unlock()
		}
	}()

	bundle := filepath.Join(m.cfg.StateDir, o.ID)
	rootDir := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootDir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	cleanup := []func(){func() { os.Remove(rootDir); os.Remove(bundle) }}
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()
	var group *cgroups.Group
	if m.cfg.Cgroups != nil {
		if group, err = m.cfg.Cgroups.Create(o.ID); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSetup, err)
		}
		cleanup = append(cleanup, func() { _ = group.Destroy() })
		if o.Spec.Linux != nil {
			if err := group.Update(o.Spec.Linux.Resources); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrSetup, err)
			}
		}
	}
	proc := o.Spec.Process
	pio, err := newStdio(o.Stdin, proc.Terminal, proc.ConsoleSize)
	if err != nil {
		return nil, fmt.Errorf("%w: stdio: %w", ErrSetup, err)
	}
	defer pio.closeChild()
	cleanup = append(cleanup, pio.close)

	cfg := &initConfig{Mode: modeCreate, ID: o.ID, Spec: o.Spec, Rootfs: o.Rootfs, RootfsDir: rootDir}
	w, conn, err := m.spawner.start(cfg, pio, nil, containerCloneFlags, true)
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, conn.close)
	if group != nil {
		// The child is still reading its configuration: nothing it runs
		// escapes the group.
		if err := group.AddProc(w.Pid()); err != nil {
			_ = unix.Kill(w.Pid(), unix.SIGKILL)
			return nil, fmt.Errorf("%w: %w", ErrSetup, err)
		}
	}
	if _, err := expectReply(ctx, conn, w, replyReady); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.ID, err)
	}
	pidNS, err := pidNamespace(w.Pid())
	if err != nil {
		_ = unix.Kill(w.Pid(), unix.SIGKILL)
		return nil, fmt.Errorf("%w: %w", ErrSetup, err)
	}
	c := newContainer(o.ID, o.Spec, bundle, group, m.spawner, m.log, w, conn, pio)
	c.pidNS = pidNS
	go c.watch()
	m.mu.Lock()
	m.containers[o.ID] = c
	m.mu.Unlock()
	m.log.Info("container created", "id", o.ID, "pid", w.Pid(), "rootfs", o.Rootfs.Source)
	return c, nil
}

// Get returns a container.
func (m *Manager) Get(id string) (*Container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.containers[id]
	if c == nil {
		return nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	return c, nil
}

// List returns all containers.
func (m *Manager) List() []*Container {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Container
	for _, c := range m.containers {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// Remove forgets a stopped container and frees its resources; with force a
// created or running one is killed first.
func (m *Manager) Remove(ctx context.Context, id string, force bool) error {
	c, err := m.Get(id)
	if err != nil {
		return err
	}
	if s := c.State(); s != Stopped {
		if !force {
			return fmt.Errorf("remove %s (%s): %w", id, s, ErrInvalidState)
		}
		c.kill()
		if _, err := c.init.Wait(ctx); err != nil {
			return fmt.Errorf("remove %s: %w", id, err)
		}
	}
	m.mu.Lock()
	delete(m.containers, id)
	m.mu.Unlock()
	return c.release()
}

// StopAll sends SIGTERM to every container's process group, waits up to
// grace, then SIGKILLs what is left. It returns once all inits exited or ctx
// ends.
func (m *Manager) StopAll(ctx context.Context, grace time.Duration) error {
	cs := m.List()
	for _, c := range cs {
		if !c.init.Exited() {
			_ = c.init.Signal(unix.SIGTERM, true)
		}
	}
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for _, c := range cs {
		select {
		case <-c.init.Done():
		case <-timer.C:
			for _, c := range cs {
				c.kill()
			}
		case <-ctx.Done():
			return fmt.Errorf("stop containers: %w", ctx.Err())
		}
	}
	for _, c := range cs {
		if _, err := c.init.Wait(ctx); err != nil {
			return err
		}
	}
	return nil
}
