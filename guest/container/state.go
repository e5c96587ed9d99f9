package container

import "fmt"

// State is a container's lifecycle state. Transitions:
//
//	Created --Start--> Running --init exits--> Stopped
//	Created --init exits (killed before start)--> Stopped
type State int

const (
	// Created: namespaces and mounts are set up; the init process waits
	// for Start before it execs the user's program.
	Created State = iota + 1
	// Running: the user's program runs.
	Running
	// Stopped: the container's init process has exited.
	Stopped
)

func (s State) String() string {
	switch s {
	case Created:
		return "created"
	case Running:
		return "running"
	case Stopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// allowed lists the legal transitions.
var allowed = map[State][]State{
	Created: {Running, Stopped},
	Running: {Stopped},
}

// transition checks that from -> to is legal.
func transition(from, to State) error {
	for _, s := range allowed[from] {
		if s == to {
			return nil
		}
	}
	return fmt.Errorf("%s -> %s: %w", from, to, ErrInvalidState)
}
