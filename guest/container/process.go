package container

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/embervm/ember/guest/reaper"
	"golang.org/x/sys/unix"
)

// Process is a process the agent started: a container's init or an exec
// process. Its exit status comes from the reaper.
type Process struct {
	id     string // exec id; "" for the container's init
	pid    int
	waiter *reaper.Waiter
	io     *stdio
}

func newProcess(id string, w *reaper.Waiter, io *stdio) *Process {
	return &Process{id: id, pid: w.Pid(), waiter: w, io: io}
}

// ID is the exec id ("" for the container's own process).
func (p *Process) ID() string { return p.id }

// Pid is the process id in the agent's pid namespace.
func (p *Process) Pid() int { return p.pid }

// Exited reports whether the process was reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.waiter.Done():
		return true
	default:
		return false
	}
}

// Done is closed once the process was reaped.
func (p *Process) Done() <-chan struct{} { return p.waiter.Done() }

// Wait blocks until the process exits.
func (p *Process) Wait(ctx context.Context) (reaper.Status, error) {
	return p.waiter.Wait(ctx)
}

// Signal sends sig to the process, or to its process group (every process
// the agent starts leads its own session and group).
func (p *Process) Signal(sig unix.Signal, group bool) error {
	if p.Exited() {
		return fmt.Errorf("signal pid %d: process exited: %w", p.pid, ErrInvalidState)
	}
	target := p.pid
	if group {
		target = -p.pid
	}
	err := unix.Kill(target, sig)
	if errors.Is(err, unix.ESRCH) && group {
		// The group leader exists (not reaped) but the group may be empty
		// if the leader has not yet called setsid; fall back to the pid.
		err = unix.Kill(p.pid, sig)
	}
	if err != nil {
		return fmt.Errorf("signal pid %d: %w", p.pid, os.NewSyscallError("kill", err))
	}
	return nil
}

// ReadStdout returns up to max bytes of output; see outStream.Read.
func (p *Process) ReadStdout(ctx context.Context, max int) ([]byte, bool, error) {
	return p.io.stdout.Read(ctx, max)
}

// ReadStderr returns up to max bytes of stderr (always EOF on a terminal).
func (p *Process) ReadStderr(ctx context.Context, max int) ([]byte, bool, error) {
	return p.io.stderr.Read(ctx, max)
}

// WriteStdin writes data to stdin, blocking while the pipe is full.
func (p *Process) WriteStdin(ctx context.Context, data []byte) (int, error) {
	return p.io.writeStdin(ctx, data)
}

// CloseStdin closes stdin.
func (p *Process) CloseStdin() error { return p.io.closeStdin() }

// Resize sets the terminal size.
func (p *Process) Resize(rows, cols uint16) error { return p.io.resize(rows, cols) }

// release frees the agent's side of the process's stdio.
func (p *Process) release() { p.io.close() }

// Status is the exit status once Done is closed (zero before).
func (p *Process) Status() reaper.Status {
	if !p.Exited() {
		return reaper.Status{}
	}
	return p.waiter.Status()
}
