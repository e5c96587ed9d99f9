package reaper

import (
	"context"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func spawn(t *testing.T, script string) func() (int, error) {
	t.Helper()
	return func() (int, error) {
		return syscall.ForkExec("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{
			Files: []uintptr{0, 1, 2},
		})
	}
}

func TestReaperStatuses(t *testing.T) {
	tests := []struct {
		name   string
		script string
		code   int
		signal unix.Signal
	}{
		{"exit 0", "exit 0", 0, 0},
		{"exit 3", "exit 3", 3, 0},
		{"killed", "kill -KILL $$", 137, unix.SIGKILL},
		{"terminated", "kill -TERM $$", 143, unix.SIGTERM},
	}
	for _, mode := range []Mode{ModeRegistered, ModeAll} {
		r := New(mode)
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				w, err := r.Start(spawn(t, tc.script))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				st, err := w.Wait(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if st.Code != tc.code || st.Signal != tc.signal || st.Pid != w.Pid() {
					t.Errorf("mode %d: got %+v, want code %d signal %v", mode, st, tc.code, tc.signal)
				}
			})
		}
		r.Stop()
	}
}

func TestExpectationKeepsEarlyExit(t *testing.T) {
	r := New(ModeAll)
	defer r.Stop()
	e := r.Expect()
	defer e.Close()
	// Start a child without registering it, let it exit and be reaped.
	pid, err := spawn(t, "exit 7")()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		_, ok := r.unclaimed[pid]
		r.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("child was not reaped")
		}
		r.poke()
		time.Sleep(5 * time.Millisecond)
	}
	w := e.Register(pid)
	select {
	case <-w.Done():
	default:
		t.Fatal("waiter not done for an already reaped pid")
	}
	if w.Status().Code != 7 {
		t.Errorf("code = %d, want 7", w.Status().Code)
	}
}

func TestStartAfterStop(t *testing.T) {
	r := New(ModeRegistered)
	r.Stop()
	if _, err := r.Start(spawn(t, "exit 0")); err != ErrStopped {
		t.Fatalf("err = %v, want ErrStopped", err)
	}
}
