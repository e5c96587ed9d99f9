package container

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/embervm/ember/guest/cgroups"
)

// oomPoll is how often WaitOOM re-reads the counter should its inotify
// watch end early (it should not).
const oomPoll = time.Second

// OOMKills is how many of the container's processes the OOM killer
// killed so far (its cgroup's memory.events oom_kill); 0 without a cgroup
// v2 with the memory controller.
func (c *Container) OOMKills() uint64 {
	if c.group == nil {
		return 0
	}
	n, err := c.group.OOMKills()
	if err != nil {
		return 0
	}
	return n
}

// WaitOOM blocks until the container's OOM-kill count exceeds after, or
// until the container stopped (stopped is then true and n final: the
// kernel counts an OOM kill before it sends the SIGKILL, so every kill
// that ended a process is in it). Without a cgroup v2 with the memory
// controller it fails with ErrUnsupported.
func (c *Container) WaitOOM(ctx context.Context, after uint64) (n uint64, stopped bool, err error) {
	if c.group == nil {
		return 0, false, fmt.Errorf("OOM events of %s: no cgroup v2 in this guest: %w", c.id, ErrUnsupported)
	}
	// Watch first, then read: a kill after the read is seen.
	w, err := c.group.WatchMemoryEvents()
	if errors.Is(err, cgroups.ErrNoMemoryEvents) {
		return 0, false, fmt.Errorf("OOM events of %s: %w: %w", c.id, err, ErrUnsupported)
	}
	if err != nil {
		return 0, false, fmt.Errorf("OOM events of %s: %w", c.id, err)
	}
	defer w.Close()
	changed := w.Changed()
	var poll <-chan time.Time
	for {
		done := c.init.Exited()
		n, err := c.group.OOMKills()
		if err != nil {
			return 0, false, fmt.Errorf("OOM events of %s: %w", c.id, err)
		}
		if n > after || done {
			return n, done, nil
		}
		select {
		case _, ok := <-changed:
			if !ok {
				c.log.Warn("memory.events watch ended; polling", "id", c.id)
				changed = nil
				t := time.NewTicker(oomPoll)
				defer t.Stop()
				poll = t.C
			}
		case <-poll:
		case <-c.init.Done():
		case <-ctx.Done():
			return 0, false, fmt.Errorf("OOM events of %s: %w", c.id, ctx.Err())
		}
	}
}
