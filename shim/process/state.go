// Package process holds the shim's view of a container process (the
// container's init or an exec): its state as explicit transitions, its
// exit status, and waiting for it.
package process

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Status is a process's lifecycle state.
type Status int

// States. Created → Running ⇄ Paused → Stopped → Deleted; Created may also
// go to Stopped (killed before start) or straight to Deleted.
const (
	Created Status = iota
	Running
	Paused
	Stopped
	Deleted
)

func (s Status) String() string {
	switch s {
	case Created:
		return "created"
	case Running:
		return "running"
	case Paused:
		return "paused"
	case Stopped:
		return "stopped"
	case Deleted:
		return "deleted"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// Event moves a process from one state to another.
type Event int

// Events.
const (
	EventStart Event = iota
	EventPause
	EventResume
	EventExit
	EventDelete
)

func (e Event) String() string {
	return [...]string{"start", "pause", "resume", "exit", "delete"}[e]
}

// ErrTransition is a request that the current state does not allow (start
// twice, pause a stopped process, delete a running one).
var ErrTransition = errors.New("invalid state transition")

// transitions lists every allowed (state, event) pair.
var transitions = map[Status]map[Event]Status{
	Created: {EventStart: Running, EventExit: Stopped, EventDelete: Deleted},
	Running: {EventPause: Paused, EventExit: Stopped},
	Paused:  {EventResume: Running, EventExit: Stopped},
	Stopped: {EventDelete: Deleted},
	Deleted: {},
}

// Next returns the state after ev, or an error wrapping ErrTransition.
func (s Status) Next(ev Event) (Status, error) {
	if n, ok := transitions[s][ev]; ok {
		return n, nil
	}
	return s, fmt.Errorf("%w: cannot %s a %s process", ErrTransition, ev, s)
}

// Exit is how a process ended.
type Exit struct {
	Status uint32
	At     time.Time
}

// Process is one process of a container, as the shim tracks it.
type Process struct {
	// ContainerID and ExecID name it ("" for the container's init).
	ContainerID, ExecID string
	// Stdio are containerd's paths/URIs for its streams.
	Stdin, Stdout, Stderr string
	Terminal              bool

	mu     sync.Mutex
	status Status
	pid    uint32
	exit   Exit
	exited chan struct{}
}

// New returns a process in state Created.
func New(containerID, execID string) *Process {
	return &Process{ContainerID: containerID, ExecID: execID, exited: make(chan struct{})}
}

// Status returns the current state.
func (p *Process) Status() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Transition applies ev.
func (p *Process) Transition(ev Event) error {
	if ev == EventExit {
		return fmt.Errorf("%w: use SetExited", ErrTransition)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.status.Next(ev)
	if err != nil {
		return fmt.Errorf("%s: %w", p.name(), err)
	}
	p.status = n
	return nil
}

// Check reports whether ev would be allowed now, without applying it.
func (p *Process) Check(ev Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.status.Next(ev); err != nil {
		return fmt.Errorf("%s: %w", p.name(), err)
	}
	return nil
}

func (p *Process) name() string {
	if p.ExecID == "" {
		return p.ContainerID
	}
	return p.ContainerID + "/" + p.ExecID
}

// SetPid records the process's pid (as the guest agent reports it).
func (p *Process) SetPid(pid uint32) {
	p.mu.Lock()
	p.pid = pid
	p.mu.Unlock()
}

// Pid returns the recorded pid.
func (p *Process) Pid() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// SetExited records the exit and wakes waiters. It reports false (and
// changes nothing) when the process had already exited or was deleted.
func (p *Process) SetExited(e Exit) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, err := p.status.Next(EventExit)
	if err != nil {
		return false
	}
	p.status = n
	p.exit = e
	close(p.exited)
	return true
}

// Exited returns the exit once the process has exited.
func (p *Process) Exited() (Exit, bool) {
	select {
	case <-p.exited:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exit, true
	default:
		return Exit{}, false
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Wait blocks until the process exits or ctx ends.
func (p *Process) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.exited:
		e, _ := p.Exited()
		return e, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}
