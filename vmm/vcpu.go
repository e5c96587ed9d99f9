package vmm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/kvm"
)

// VCPUState is where a vCPU is in its life.
type VCPUState int32

// vCPU states. Created and Paused accept state changes; Running refuses them.
const (
	VCPUCreated VCPUState = iota
	VCPURunning
	VCPUPaused
	VCPUFinished
)

func (s VCPUState) String() string {
	switch s {
	case VCPUCreated:
		return "created"
	case VCPURunning:
		return "running"
	case VCPUPaused:
		return "paused"
	case VCPUFinished:
		return "finished"
	}
	return fmt.Sprintf("VCPUState(%d)", int32(s))
}

// ExitHandler handles the exits a vCPU cannot handle itself.
type ExitHandler interface {
	// HandleIO handles one port access of len(data) bytes.
	HandleIO(port uint16, data []byte, write bool) error
	// HandleMMIO handles one MMIO access of len(data) bytes.
	HandleMMIO(addr uint64, data []byte, write bool) error
}

// kick requests.
const (
	kickNone int32 = iota
	kickPause
	kickStop
)

type request struct {
	run  bool                  // enter the guest
	fn   func(*kvm.VCPU) error // run fn on the vCPU thread
	done chan error
}

// VCPU runs one KVM vCPU on its own locked OS thread. All its ioctls are
// made on that thread: KVM_RUN while running, and closures passed to Do
// while paused.
type VCPU struct {
	id   int
	fd   *kvm.VCPU
	exit ExitHandler
	log  *slog.Logger

	tid   atomic.Int32
	state atomic.Int32
	kick  atomic.Int32 // kickNone, kickPause or kickStop

	ctl    sync.Mutex    // serializes Start/Pause/Resume/Stop/Do
	paused chan struct{} // receives when a pause request has taken effect
	done   chan struct{} // closed when the thread has exited
	err    error         // why it finished; read after done

	// The idle thread waits in poll(2) on wakeFD (and on an armed
	// trigger's fd), not on a Go channel, so that a request or a trigger
	// wakes it directly, without a hand-over through Go's scheduler.
	qmu      sync.Mutex
	queue    []request
	trigger  *trigger // armed by ResumeOn
	finished bool     // the thread has exited; wakeFD is closed
	wakeFD   int      // eventfd: a request was queued or the trigger changed

	exits atomic.Uint64
}

// trigger is an armed ResumeOn.
type trigger struct {
	fds     []int
	prepare Prepare
}

// Prepare decides, on the vCPU thread, whether an armed ResumeOn enters
// the guest (run). then, if not nil, runs on the vCPU thread once the
// vCPU's state says so (running, or back to waiting): where to tell
// others what was decided.
type Prepare func() (run bool, then func())

func newVCPU(id int, fd *kvm.VCPU, exit ExitHandler, log *slog.Logger) (*VCPU, error) {
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("vCPU %d: eventfd: %w", id, err)
	}
	c := &VCPU{
		id: id, fd: fd, exit: exit, log: log.With("vcpu", id),
		paused: make(chan struct{}, 1),
		done:   make(chan struct{}),
		wakeFD: wfd,
	}
	ready := make(chan struct{})
	go c.thread(ready)
	<-ready
	return c, nil
}

// ID returns the vCPU index.
func (c *VCPU) ID() int { return c.id }

// State returns the vCPU's current state.
func (c *VCPU) State() VCPUState { return VCPUState(c.state.Load()) }

// Exits returns how many exits to userspace the vCPU has taken.
func (c *VCPU) Exits() uint64 { return c.exits.Load() }

// Done is closed when the vCPU thread has finished.
func (c *VCPU) Done() <-chan struct{} { return c.done }

// Err returns why the vCPU finished (nil for a requested stop). Valid after
// Done is closed.
func (c *VCPU) Err() error { return c.err }

// thread is the vCPU's OS thread. It never unlocks the thread: when it
// returns, the Go runtime discards the thread and its KVM association.
func (c *VCPU) thread(ready chan<- struct{}) {
	runtime.LockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	close(ready)
	defer close(c.done)
	defer c.finish()
	for {
		req := c.next()
		switch {
		case req.fn != nil:
			req.done <- req.fn(c.fd)
		case req.run:
			c.state.Store(int32(VCPURunning))
			if req.done != nil {
				req.done <- nil
			}
			stop, err := c.runGuest()
			if err != nil || stop {
				c.err = err
				c.state.Store(int32(VCPUFinished))
				return
			}
			c.state.Store(int32(VCPUPaused))
			c.paused <- struct{}{}
		default: // stop
			c.state.Store(int32(VCPUFinished))
			if req.done != nil {
				req.done <- nil
			}
			return
		}
	}
}

// finish marks the thread gone: later requests fail with ErrStopped, and
// the ones still queued are answered by done being closed.
func (c *VCPU) finish() {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	c.finished = true
	c.queue, c.trigger = nil, nil
	unix.Close(c.wakeFD)
}

// next returns the next request, waiting for one while the vCPU is idle.
// An armed trigger whose fd becomes readable turns into a run request if
// its prepare says so (see ResumeOn).
func (c *VCPU) next() request {
	fds := make([]unix.PollFd, 0, 2)
	for {
		c.qmu.Lock()
		if len(c.queue) > 0 {
			r := c.queue[0]
			c.queue[0] = request{}
			c.queue = c.queue[1:]
			c.qmu.Unlock()
			return r
		}
		t := c.trigger
		c.qmu.Unlock()
		fds = append(fds[:0], unix.PollFd{Fd: int32(c.wakeFD), Events: unix.POLLIN})
		if t != nil {
			for _, fd := range t.fds {
				fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			}
		}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue // a kick signal meant for KVM_RUN, or another signal
			}
			c.err = fmt.Errorf("vCPU %d: poll: %w", c.id, err)
			return request{}
		}
		if fds[0].Revents != 0 {
			var b [8]byte
			unix.Read(c.wakeFD, b[:]) // reset the counter
		}
		if t == nil || !triggered(fds[1:]) {
			continue
		}
		c.qmu.Lock()
		armed := c.trigger == t
		if armed {
			c.trigger = nil
		}
		c.qmu.Unlock()
		if armed {
			run, then := c.fire(t)
			if then != nil {
				then()
			}
			if run {
				return request{run: true}
			}
		}
	}
}

// triggered reports whether poll found any of fds ready.
func triggered(fds []unix.PollFd) bool {
	for _, fd := range fds {
		if fd.Revents != 0 {
			return true
		}
	}
	return false
}

// fire runs an armed trigger's prepare. The vCPU counts as running while
// prepare decides, so that a Pause or Stop meanwhile kicks it (and is
// honoured by KVM_RUN returning at once) instead of being lost.
func (c *VCPU) fire(t *trigger) (run bool, then func()) {
	prev := c.state.Swap(int32(VCPURunning))
	run, then = t.prepare()
	if run {
		return true, then
	}
	// The state first, then the kick: see kickThread.
	c.state.Store(prev)
	switch c.kick.Swap(kickNone) {
	case kickPause:
		c.fd.SetImmediateExit(false)
		c.paused <- struct{}{}
	case kickStop:
		c.fd.SetImmediateExit(false)
		c.post(request{}) // taken next, ending the thread
	}
	return false, then
}

// runGuest enters the guest until a kick or a fatal exit. It reports stop
// for a stop request, or the error that ends the vCPU.
//
// A kick is taken only when KVM_RUN returns EINTR, never right after an
// exit was handled: KVM finishes a port-I/O or MMIO instruction (advances
// RIP, writes the value read into its register) only on the next KVM_RUN,
// and keeps that pending work where KVM_GET_REGS and friends cannot see it
// (KVM API, "kvm_run": userspace must re-enter KVM_RUN, e.g. with
// immediate_exit set, to complete pending operations before saving state).
// A vCPU paused in between would be saved before the instruction it had
// half done, and a restore would execute it a second time. With
// immediate_exit set by the kick, that last KVM_RUN completes the pending
// instruction and returns EINTR without running any further guest code.
func (c *VCPU) runGuest() (stop bool, err error) {
	for {
		if err := c.fd.Run(); err != nil {
			if kvm.IsInterrupted(err) || errors.Is(err, unix.EAGAIN) {
				if k := c.kick.Load(); k != kickNone {
					c.fd.SetImmediateExit(false)
					c.kick.Store(kickNone)
					return k == kickStop, nil
				}
				continue // a stray signal, or a kick still being stored
			}
			return true, fmt.Errorf("vCPU %d: %w", c.id, err)
		}
		c.exits.Add(1)
		if err := c.handleExit(); err != nil {
			return true, err
		}
	}
}

func (c *VCPU) handleExit() error {
	run := c.fd.RunData()
	switch run.ExitReason {
	case kvm.ExitIO:
		io := run.IO()
		data, err := c.fd.IOData()
		if err != nil {
			return c.exitError(run.ExitReason, "", err)
		}
		size := int(io.Size)
		write := io.Direction == kvm.IODirOut
		for i := 0; i < int(io.Count); i++ {
			if err := c.exit.HandleIO(io.Port, data[i*size:(i+1)*size], write); err != nil {
				return c.exitError(run.ExitReason, fmt.Sprintf("port %#x", io.Port), err)
			}
		}
		return nil
	case kvm.ExitMMIO:
		m := run.MMIO()
		if m.Len > 8 {
			return c.exitError(run.ExitReason, fmt.Sprintf("mmio length %d", m.Len), ErrUnhandledExit)
		}
		if err := c.exit.HandleMMIO(m.PhysAddr, m.Data[:m.Len], m.IsWrite != 0); err != nil {
			return c.exitError(run.ExitReason, fmt.Sprintf("address %#x", m.PhysAddr), err)
		}
		return nil
	case kvm.ExitIntr:
		return nil
	case kvm.ExitHLT:
		// Without an in-kernel irqchip a HLT ends the vCPU, as in Firecracker.
		return &StopRequest{Code: 0, Reason: fmt.Sprintf("vCPU %d halted", c.id)}
	case kvm.ExitShutdown:
		return c.exitError(run.ExitReason, "triple fault", ErrGuestShutdown)
	case kvm.ExitSystemEvent:
		ev := run.SystemEvent()
		switch ev.Type {
		case kvm.SystemEventShutdown:
			return &StopRequest{Code: 0, Reason: "guest powered off"}
		case kvm.SystemEventReset:
			return &StopRequest{Code: 0, Reason: "guest reset"}
		}
		return c.exitError(run.ExitReason, fmt.Sprintf("system event type %d", ev.Type), ErrGuestShutdown)
	case kvm.ExitFailEntry:
		fe := run.FailEntry()
		return c.exitError(run.ExitReason, fmt.Sprintf("hardware entry failure reason %#x on cpu %d",
			fe.HardwareEntryFailureReason, fe.CPU), ErrUnhandledExit)
	case kvm.ExitInternalError:
		ie := run.Internal()
		return c.exitError(run.ExitReason, fmt.Sprintf("suberror %d", ie.Suberror), ErrUnhandledExit)
	}
	return c.exitError(run.ExitReason, "", ErrUnhandledExit)
}

func (c *VCPU) exitError(reason kvm.ExitReason, detail string, err error) error {
	var sr *StopRequest
	if errors.As(err, &sr) {
		return err
	}
	e := &ExitError{VCPU: c.id, Reason: reason, Detail: detail, Err: err}
	if regs, rerr := c.fd.GetRegs(); rerr == nil {
		e.RIP = regs.RIP
	}
	return e
}

// post queues r for the vCPU thread and wakes it. It fails once the
// thread has finished.
func (c *VCPU) post(r request) error {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.finished {
		return fmt.Errorf("vCPU %d: %w", c.id, ErrStopped)
	}
	c.queue = append(c.queue, r)
	c.wake()
	return nil
}

// wake makes the idle thread look at its queue and trigger again. Called
// with qmu held (wakeFD is closed under it).
func (c *VCPU) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(c.wakeFD, one[:])
}

// sendStop asks the idle thread to end.
func (c *VCPU) sendStop(ctx context.Context) error {
	if err := c.send(ctx, request{done: make(chan error, 1)}); err != nil && !errors.Is(err, ErrStopped) {
		return err
	}
	return nil
}

// errNotRunning: a kick found the vCPU no longer running (kickThread).
var errNotRunning = errors.New("vCPU not running")

// send hands a request to the vCPU thread, unless it has finished, and
// waits for its answer.
func (c *VCPU) send(ctx context.Context, r request) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	if err := c.post(r); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		return err
	case <-c.done:
		return fmt.Errorf("vCPU %d: %w", c.id, ErrStopped)
	}
}

// ResumeOn arms a one-shot resume that a message on fd sets off: once fd
// is readable while the vCPU waits (created or paused), its thread calls
// prepare and, if prepare says run, enters the guest at once. The thread
// itself polls fd, so a supervisor's message (the warm pool's claim)
// wakes exactly the thread that runs the guest, and nothing else is woken
// on the way in. prepare runs on the vCPU thread: it must not wait for
// this vCPU (Do, Pause, Resume). A later ResumeOn replaces an armed one.
func (c *VCPU) ResumeOn(fd int, prepare Prepare) error {
	return c.ResumeOnAny([]int{fd}, prepare)
}

// ResumeOnAny is ResumeOn for a message on any of fds.
func (c *VCPU) ResumeOnAny(fds []int, prepare Prepare) error {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.finished {
		return fmt.Errorf("vCPU %d: %w", c.id, ErrStopped)
	}
	c.trigger = &trigger{fds: fds, prepare: prepare}
	c.wake()
	return nil
}

// Do runs fn on the vCPU's thread. The vCPU must not be running: state
// cannot be read or written while the guest runs (ErrRunning).
func (c *VCPU) Do(ctx context.Context, fn func(*kvm.VCPU) error) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if s := c.State(); s == VCPURunning {
		return fmt.Errorf("vCPU %d: %w", c.id, ErrRunning)
	}
	return c.send(ctx, request{fn: fn, done: make(chan error, 1)})
}

// Resume enters (or re-enters) the guest.
func (c *VCPU) Resume(ctx context.Context) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.State() == VCPURunning {
		return nil
	}
	select { // drop a pause acknowledgement nobody waited for
	case <-c.paused:
	default:
	}
	return c.send(ctx, request{run: true, done: make(chan error, 1)})
}

// Pause kicks the vCPU out of KVM_RUN and waits until it is paused. It
// returns ErrStopped if the vCPU finished instead.
func (c *VCPU) Pause(ctx context.Context) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.State() != VCPURunning {
		if c.State() == VCPUFinished {
			return fmt.Errorf("vCPU %d: %w", c.id, ErrStopped)
		}
		return nil
	}
	if err := c.kickThread(kickPause); err != nil {
		if errors.Is(err, errNotRunning) {
			return nil // it stopped running before the kick: paused already
		}
		return err
	}
	select {
	case <-c.paused:
		return nil
	case <-c.done:
		return fmt.Errorf("vCPU %d: %w", c.id, ErrStopped)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop ends the vCPU thread, kicking it out of the guest if it runs, and
// waits for it.
func (c *VCPU) Stop(ctx context.Context) error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	switch c.State() {
	case VCPUFinished:
	case VCPURunning:
		err := c.kickThread(kickStop)
		if errors.Is(err, errNotRunning) {
			err = c.sendStop(ctx)
		}
		if err != nil {
			return err
		}
	default:
		if err := c.sendStop(ctx); err != nil {
			return err
		}
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// kickThread asks the running vCPU to leave the guest: immediate_exit makes
// any KVM_RUN it is about to enter return at once (after completing a
// pending I/O instruction), and the signal interrupts one already under
// way. immediate_exit is set before the kick is recorded: the vCPU thread
// clears it when it takes the kick, so it is never left set for the next
// run.
//
// A vCPU counted as running while an armed ResumeOn's prepare decides
// (fire) can stop running without a kick: the thread stores the new state
// and then takes any kick, and the kicker stores the kick and then checks
// the state, so one of them sees the other (Go's atomics are sequentially
// consistent). If the kicker sees the vCPU no longer running and takes its
// kick back, it reports errNotRunning and the caller goes the idle way.
func (c *VCPU) kickThread(kind int32) error {
	c.fd.SetImmediateExit(true)
	c.kick.Store(kind)
	if c.State() != VCPURunning && c.kick.CompareAndSwap(kind, kickNone) {
		c.fd.SetImmediateExit(false)
		return errNotRunning
	}
	if err := tgkill(int(c.tid.Load())); err != nil && err != unix.ESRCH {
		return fmt.Errorf("vCPU %d: kick: %w", c.id, err)
	}
	return nil
}
