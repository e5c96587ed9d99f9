package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// memoryEvents is the memory controller's event counter file. The kernel
// notifies a change of it as a modification (inotify IN_MODIFY, poll).
const memoryEvents = "memory.events"

// ErrNoMemoryEvents means the group has no memory.events: the memory
// controller is not enabled for it.
var ErrNoMemoryEvents = errors.New("no memory.events (memory controller not enabled)")

// OOMKills reads how many processes of the group (and its descendants)
// the OOM killer killed: the oom_kill counter of memory.events.
func (g *Group) OOMKills() (uint64, error) {
	data, err := os.ReadFile(filepath.Join(g.dir, memoryEvents))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", g.dir, ErrNoMemoryEvents)
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", memoryEvents, err)
	}
	return parseKV(data)["oom_kill"], nil
}

// EventWatcher reports changes of a group's memory.events.
type EventWatcher struct {
	f       *os.File
	changed chan struct{}
}

// WatchMemoryEvents starts watching the group's memory.events. Read the
// counters after it returns: a change from then on is reported.
func (g *Group) WatchMemoryEvents() (*EventWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	path := filepath.Join(g.dir, memoryEvents)
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("%s: %w", g.dir, ErrNoMemoryEvents)
		}
		return nil, fmt.Errorf("watch %s: %w", path, os.NewSyscallError("inotify_add_watch", err))
	}
	// Non-blocking: reads go through Go's poller, and Close ends them.
	w := &EventWatcher{f: os.NewFile(uintptr(fd), "inotify:"+path), changed: make(chan struct{}, 1)}
	go w.run()
	return w, nil
}

func (w *EventWatcher) run() {
	defer close(w.changed)
	buf := make([]byte, 4096)
	for {
		if _, err := w.f.Read(buf); err != nil {
			return
		}
		// Every event is a reason to re-read the counters (IN_IGNORED too:
		// the group was removed); several coalesce into one.
		select {
		case w.changed <- struct{}{}:
		default:
		}
	}
}

// Changed receives a value after memory.events changed; it is closed
// when the watcher is closed.
func (w *EventWatcher) Changed() <-chan struct{} { return w.changed }

// Close stops watching.
func (w *EventWatcher) Close() error { return w.f.Close() }
