// Package vmmproc is the body of an ember VMM process: one Machine behind
// the control API (vmm/api), with the lifecycle the API promises.
package vmmproc

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/api"
)

// Hooks adapt an Instance to what runs in its machine.
type Hooks struct {
	// Reports returns values a test guest reported (optional).
	Reports func() []uint64
	// FirstReport returns when a test guest first reported (optional;
	// zero until then).
	FirstReport func() time.Time
	// ApplyIdentity makes the VM distinct (optional; without it SetIdentity
	// is unsupported).
	ApplyIdentity func(ctx context.Context, id api.Identity) error
	// PrepareIdentity runs once while a leased VM waits for its claim
	// (ServeLease), to take work off ApplyIdentity's path then (optional).
	// It must not change what the guest sees.
	PrepareIdentity func() error
	// Snapshot writes a snapshot of the paused machine (optional).
	Snapshot func(ctx context.Context, req api.SnapshotRequest) error
	// Restore describes how memory was restored (optional).
	Restore func() *api.RestoreStats
	// AfterResume runs after each successful Resume, for work that needs
	// the guest running (optional): a Linux VM's pending identity goes to
	// its agent here.
	AfterResume func(ctx context.Context) error
	// AfterPause runs after each successful Pause (optional): what needs
	// the guest running must wait for the next resume again.
	AfterPause func()
	// Drives gives the VM's spare drive slots to the API (optional; without
	// it GET /drives lists none and attaching is unsupported).
	Drives DriveSlots
	// BeforeStart runs just before the vCPUs run for the first time
	// (optional): a restored Linux VM sets its clock there
	// (boot.Restored.BeforeStart). It may run on a vCPU thread (a claim
	// through the lease): it must not wait for the vCPUs.
	BeforeStart func(ctx context.Context) error
}

// Instance is a Machine driven through the API. It implements
// api.Controller.
type Instance struct {
	id     string
	m      *vmm.Machine
	source string
	hooks  Hooks
	born   time.Time

	waitedOnce sync.Once
	waited     chan struct{}

	mu       sync.Mutex
	started  bool // Start, StartPaused or Stop was called
	ran      bool // the vCPUs have run
	paused   bool
	leased   bool // a supervisor holds the VM until it claims it (ServeLease)
	identity *api.Identity
}

var _ api.Controller = (*Instance)(nil)

// New wraps m. source says how the VM was made ("testguest",
// "restore:uffd", "boot").
func New(id string, m *vmm.Machine, source string, hooks Hooks) *Instance {
	return &Instance{id: id, m: m, source: source, hooks: hooks, born: time.Now(), waited: make(chan struct{})}
}

// Waited is closed once a Wait call has returned the VM's end.
func (in *Instance) Waited() <-chan struct{} { return in.waited }

// Machine returns the wrapped machine.
func (in *Instance) Machine() *vmm.Machine { return in.m }

// Info implements api.Controller.
func (in *Instance) Info() api.Info {
	in.mu.Lock()
	defer in.mu.Unlock()
	st := api.StateNotStarted
	switch {
	case in.started && in.ended():
		st = api.StateStopped
	case in.started && in.paused:
		st = api.StatePaused
	case in.started:
		st = api.StateRunning
	}
	return api.Info{
		ID: in.id, PID: os.Getpid(), State: st, VCPUs: len(in.m.VCPUs()),
		MemoryMiB: in.m.Memory().Size() >> 20, Source: in.source, Identity: in.identity,
	}
}

func (in *Instance) ended() bool {
	select {
	case <-in.m.Done():
		return true
	default:
		return false
	}
}

// Start implements api.Controller: it runs the vCPUs for the first time.
// A machine made ready with StartPaused may be started with Start or
// Resume.
func (in *Instance) Start(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.ran {
		return fmt.Errorf("%w: already started", api.ErrConflict)
	}
	if in.leased {
		return errLeased
	}
	if err := in.start(ctx); err != nil {
		return err
	}
	in.started, in.ran, in.paused = true, true, false
	return nil
}

// start runs the vCPUs for the first time, after BeforeStart.
func (in *Instance) start(ctx context.Context) error {
	if in.hooks.BeforeStart != nil {
		if err := in.hooks.BeforeStart(ctx); err != nil {
			return err
		}
	}
	return in.m.Start(ctx)
}

// StartPaused marks the machine started but paused without running its
// vCPUs, so that Resume runs them. A VM that waits in the warm pool (its
// state restored, its memory mapped) is in this state.
func (in *Instance) StartPaused() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.started, in.paused = true, true
	in.m.StartPaused()
}

// Pause implements api.Controller.
func (in *Instance) Pause(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.started || in.ended() {
		return fmt.Errorf("%w: not running", api.ErrConflict)
	}
	if in.leased {
		return errLeased
	}
	if err := in.m.Pause(ctx); err != nil {
		return err
	}
	in.paused = true
	if in.hooks.AfterPause != nil {
		in.hooks.AfterPause()
	}
	return nil
}

// Resume implements api.Controller. A machine prepared with StartPaused is
// started here.
func (in *Instance) Resume(ctx context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.started || in.ended() {
		return fmt.Errorf("%w: not started or already stopped", api.ErrConflict)
	}
	if !in.paused {
		return nil
	}
	if in.leased {
		return errLeased
	}
	var err error
	if !in.ran {
		err = in.start(ctx)
	} else {
		err = in.m.Resume(ctx)
	}
	if err != nil {
		return err
	}
	in.ran, in.paused = true, false
	if in.hooks.AfterResume != nil {
		return in.hooks.AfterResume(ctx)
	}
	return nil
}

// Stop implements api.Controller.
func (in *Instance) Stop(ctx context.Context) error {
	in.mu.Lock()
	in.started, in.ran = true, true
	in.mu.Unlock()
	return in.m.Stop(ctx)
}

// Wait implements api.Controller.
func (in *Instance) Wait(ctx context.Context) (*api.ExitInfo, error) {
	in.mu.Lock()
	started := in.started
	in.mu.Unlock()
	if !started {
		return nil, fmt.Errorf("%w: not started", api.ErrConflict)
	}
	res, err := in.m.Wait(ctx)
	if err != nil {
		return nil, err
	}
	ei := &api.ExitInfo{Reason: "stopped"}
	switch {
	case res.Err != nil:
		ei.Error, ei.Reason = res.Err.Error(), "error"
	case res.Stop != nil:
		ei.Code, ei.Reason = res.Stop.Code, res.Stop.Reason
	}
	if in.hooks.Reports != nil {
		ei.Reports = in.hooks.Reports()
	}
	in.waitedOnce.Do(func() { close(in.waited) })
	return ei, nil
}

// SetIdentity implements api.Controller.
func (in *Instance) SetIdentity(ctx context.Context, id api.Identity) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.leased {
		return errLeased
	}
	return in.setIdentity(ctx, id)
}

// setIdentity applies id. Called with in.mu held.
func (in *Instance) setIdentity(ctx context.Context, id api.Identity) error {
	if in.hooks.ApplyIdentity == nil {
		return fmt.Errorf("%w: identity", api.ErrUnsupported)
	}
	if id.ID == "" || id.Nonce == "" {
		return fmt.Errorf("%w: identity needs an id and a nonce", api.ErrBadRequest)
	}
	if in.identity != nil {
		return fmt.Errorf("%w: identity already set to %q", api.ErrConflict, in.identity.ID)
	}
	if err := in.hooks.ApplyIdentity(ctx, id); err != nil {
		return err
	}
	in.identity = &id
	return nil
}

// Snapshot implements api.Controller.
func (in *Instance) Snapshot(ctx context.Context, req api.SnapshotRequest) error {
	if err := in.checkLeased(); err != nil {
		return err
	}
	if in.hooks.Snapshot == nil {
		return fmt.Errorf("%w: snapshot", api.ErrUnsupported)
	}
	return in.hooks.Snapshot(ctx, req)
}

// Metrics implements api.Controller.
func (in *Instance) Metrics() api.Metrics {
	var exits uint64
	for _, c := range in.m.VCPUs() {
		exits += c.Exits()
	}
	m := api.Metrics{Exits: exits, Uptime: time.Since(in.born), StartedAt: in.born, RSSBytes: rss()}
	if in.hooks.Restore != nil {
		m.Restore = in.hooks.Restore()
	}
	if in.hooks.FirstReport != nil {
		m.FirstReportAt = in.hooks.FirstReport()
	}
	return m
}

// rss returns this process's resident set size from /proc/self/statm.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
