// Package reaper collects the exit statuses of child processes.
//
// As PID 1 of a VM the agent must reap every process that ends up as its
// child (orphans are re-parented to it), while handing the statuses of the
// processes it started to whoever waits for them. A Reaper does both: it
// waits on SIGCHLD and dispatches each status to the Waiter registered for
// the pid. Processes are started through Start (or an Expectation) so that a
// child can never be reaped before it is registered.
//
// When the agent is not PID 1 (tests, a host process), a Reaper in
// ModeRegistered waits only for the pids registered with it and leaves every
// other child of the process alone (os/exec keeps working).
package reaper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mode says which children a Reaper waits for.
type Mode int

const (
	// ModeRegistered waits only for registered pids.
	ModeRegistered Mode = iota
	// ModeAll waits for every child (PID 1 duty); statuses of unregistered
	// pids are dropped, except while an Expectation is open.
	ModeAll
)

// ErrStopped is returned by Start once the Reaper was stopped.
var ErrStopped = errors.New("reaper stopped")

// maxUnclaimed bounds the statuses kept for pids not yet registered.
const maxUnclaimed = 4096

// Reaper waits for child processes and dispatches their statuses.
type Reaper struct {
	mode Mode
	log  func(msg string, args ...any)

	mu        sync.Mutex
	waiters   map[int]*Waiter
	expecting int
	unclaimed map[int]Status
	stopped   bool

	kick chan struct{}
	sigc chan os.Signal
	done chan struct{}
}

// New returns a running Reaper. Stop it with Stop.
func New(mode Mode) *Reaper {
	r := &Reaper{
		mode:      mode,
		waiters:   make(map[int]*Waiter),
		unclaimed: make(map[int]Status),
		kick:      make(chan struct{}, 1),
		sigc:      make(chan os.Signal, 1),
		done:      make(chan struct{}),
	}
	signal.Notify(r.sigc, unix.SIGCHLD)
	go r.loop()
	return r
}

// Stop ends the reaping loop. Waiters not yet done stay pending.
func (r *Reaper) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	r.mu.Unlock()
	signal.Stop(r.sigc)
	close(r.done)
}

// Start runs spawn, which must start exactly one child and return its pid,
// and registers that pid before the child can be reaped.
func (r *Reaper) Start(spawn func() (int, error)) (*Waiter, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil, ErrStopped
	}
	pid, err := spawn()
	if err != nil {
		return nil, err
	}
	w := r.registerLocked(pid)
	r.poke()
	return w, nil
}

// Expect opens an Expectation: a child will appear whose pid is learned
// later (a grandchild re-parented with CLONE_PARENT). Until it is closed,
// statuses of unregistered pids are kept so that a fast exit is not lost.
func (r *Reaper) Expect() *Expectation {
	r.mu.Lock()
	r.expecting++
	r.mu.Unlock()
	return &Expectation{r: r}
}

// Expectation is an open promise to Register a pid; Close it in any case.
type Expectation struct {
	r      *Reaper
	closed bool
}

// Register registers pid and returns its Waiter (already done if the pid
// was reaped before).
func (e *Expectation) Register(pid int) *Waiter {
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	w := e.r.registerLocked(pid)
	if st, ok := e.r.unclaimed[pid]; ok {
		delete(e.r.unclaimed, pid)
		delete(e.r.waiters, pid)
		w.finish(st)
	}
	e.r.poke()
	return w
}

// Close ends the expectation.
func (e *Expectation) Close() {
	if e.closed {
		return
	}
	e.closed = true
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	e.r.expecting--
	if e.r.expecting == 0 {
		clear(e.r.unclaimed)
	}
}

func (r *Reaper) registerLocked(pid int) *Waiter {
	w := &Waiter{pid: pid, done: make(chan struct{})}
	r.waiters[pid] = w
	return w
}

func (r *Reaper) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Reaper) loop() {
	for {
		select {
		case <-r.done:
			return
		case <-r.sigc:
		case <-r.kick:
		}
		if r.mode == ModeAll {
			r.reapAll()
		} else {
			r.reapRegistered()
		}
	}
}

func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			continue
		}
		r.dispatch(StatusFromWait(pid, ws, time.Now()))
	}
}

func (r *Reaper) dispatch(st Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.waiters[st.Pid]; ok {
		delete(r.waiters, st.Pid)
		w.finish(st)
		return
	}
	if r.expecting > 0 && len(r.unclaimed) < maxUnclaimed {
		r.unclaimed[st.Pid] = st
	}
}

func (r *Reaper) reapRegistered() {
	r.mu.Lock()
	pids := make([]int, 0, len(r.waiters))
	for pid := range r.waiters {
		pids = append(pids, pid)
	}
	r.mu.Unlock()
	for _, pid := range pids {
		var ws unix.WaitStatus
		got, err := wait4(pid, &ws)
		if err != nil {
			if errors.Is(err, unix.ECHILD) {
				// Not our child (any more): nothing will ever come.
				r.dispatch(Status{Pid: pid, Code: 255, ExitedAt: time.Now()})
			}
			continue
		}
		if got == pid && (ws.Exited() || ws.Signaled()) {
			r.dispatch(StatusFromWait(pid, ws, time.Now()))
		}
	}
}

func wait4(pid int, ws *unix.WaitStatus) (int, error) {
	for {
		got, err := unix.Wait4(pid, ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("wait4", err)
		}
		return got, nil
	}
}

// Waiter is the pending exit status of one registered process.
type Waiter struct {
	pid    int
	done   chan struct{}
	status Status
}

// Pid is the process waited for.
func (w *Waiter) Pid() int { return w.pid }

// Done is closed once the process was reaped.
func (w *Waiter) Done() <-chan struct{} { return w.done }

// Status returns the exit status; valid once Done is closed.
func (w *Waiter) Status() Status { return w.status }

// Wait blocks until the process was reaped or ctx ends.
func (w *Waiter) Wait(ctx context.Context) (Status, error) {
	select {
	case <-w.done:
		return w.status, nil
	case <-ctx.Done():
		return Status{}, fmt.Errorf("wait for pid %d: %w", w.pid, ctx.Err())
	}
}

func (w *Waiter) finish(st Status) {
	w.status = st
	close(w.done)
}
