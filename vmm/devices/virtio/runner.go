package virtio

import "sync"

// Runner is the activation and pause bookkeeping every device model needs,
// and the lock that serializes its queue processing. A device embeds one
// and gets Notify, Reset, Pause and Resume of the Device interface; its
// Activate calls Runner.Start.
//
// The process function runs with the lock held, only while the device is
// active and not paused, and never after a queue was found corrupt (until
// reset).
type Runner struct {
	process func(a *Activation, queue int) error

	mu      sync.Mutex
	act     *Activation
	paused  bool
	broken  bool
	pending map[int]bool
}

// NewRunner returns a runner that handles notifications of queue i with
// process. An error from process means the ring is corrupt (the device has
// told the transport through Signal.NeedsReset); the runner stops calling
// process until Reset.
func NewRunner(process func(a *Activation, queue int) error) *Runner {
	return &Runner{process: process, pending: map[int]bool{}}
}

// Start records the activation; notifications are processed from now on.
func (r *Runner) Start(a Activation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.act, r.broken = &a, false
}

// Notify implements Device.Notify.
func (r *Runner) Notify(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.act == nil || r.broken || i < 0 || i >= len(r.act.Queues) {
		return
	}
	if r.paused {
		r.pending[i] = true
		return
	}
	r.run(i)
}

func (r *Runner) run(i int) {
	if err := r.process(r.act, i); err != nil {
		r.broken = true
	}
}

// Reset implements Device.Reset.
func (r *Runner) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.act, r.broken = nil, false
	clear(r.pending)
}

// Pause implements Device.Pause.
func (r *Runner) Pause() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paused = true
}

// Resume implements Device.Resume.
func (r *Runner) Resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.paused = false
	if r.act == nil {
		clear(r.pending)
		return
	}
	for i := range r.act.Queues {
		if r.pending[i] && !r.broken {
			r.run(i)
		}
	}
	clear(r.pending)
}

// Do runs f with the lock held if the device is active, not paused and not
// broken, and reports whether it ran. Devices use it for work that does not
// come from a notification (a frame arriving from a TAP device). An error
// from f is treated like one from process.
func (r *Runner) Do(f func(a *Activation) error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.act == nil || r.paused || r.broken {
		return false
	}
	if err := f(r.act); err != nil {
		r.broken = true
	}
	return true
}
