package process

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTransitions(t *testing.T) {
	all := []Event{EventStart, EventPause, EventResume, EventExit, EventDelete}
	want := map[Status]map[Event]Status{
		Created: {EventStart: Running, EventExit: Stopped, EventDelete: Deleted},
		Running: {EventPause: Paused, EventExit: Stopped},
		Paused:  {EventResume: Running, EventExit: Stopped},
		Stopped: {EventDelete: Deleted},
	}
	for _, s := range []Status{Created, Running, Paused, Stopped, Deleted} {
		for _, ev := range all {
			got, err := s.Next(ev)
			if n, ok := want[s][ev]; ok {
				if err != nil || got != n {
					t.Errorf("%s --%s--> %s, %v; want %s", s, ev, got, err, n)
				}
			} else if !errors.Is(err, ErrTransition) || got != s {
				t.Errorf("%s --%s--> %s, %v; want ErrTransition", s, ev, got, err)
			}
		}
	}
}

func TestProcessLifecycle(t *testing.T) {
	p := New("c1", "")
	if err := p.Transition(EventDelete); err != nil {
		t.Fatalf("delete of a created process: %v", err)
	}
	p = New("c1", "e1")
	if err := p.Transition(EventStart); err != nil {
		t.Fatal(err)
	}
	if err := p.Transition(EventStart); !errors.Is(err, ErrTransition) {
		t.Errorf("second start: %v", err)
	}
	if err := p.Transition(EventExit); !errors.Is(err, ErrTransition) {
		t.Errorf("exit through Transition: %v, want it refused (SetExited records the status)", err)
	}
	if err := p.Check(EventDelete); !errors.Is(err, ErrTransition) {
		t.Errorf("delete of a running process allowed: %v", err)
	}
	if _, ok := p.Exited(); ok {
		t.Error("exited before exit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	if _, err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait before exit: %v", err)
	}
	cancel()
	done := make(chan Exit)
	go func() { e, _ := p.Wait(context.Background()); done <- e }()
	at := time.Unix(100, 0)
	if !p.SetExited(Exit{Status: 3, At: at}) {
		t.Fatal("SetExited refused")
	}
	if p.SetExited(Exit{Status: 9}) {
		t.Error("second SetExited accepted")
	}
	if e := <-done; e.Status != 3 || !e.At.Equal(at) {
		t.Errorf("Wait = %+v", e)
	}
	if p.Status() != Stopped {
		t.Errorf("status %s", p.Status())
	}
	if err := p.Transition(EventDelete); err != nil {
		t.Fatal(err)
	}
	if p.SetExited(Exit{}) {
		t.Error("exit after delete accepted")
	}
}
