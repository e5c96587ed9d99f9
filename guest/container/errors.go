package container

import (
	"errors"
	"fmt"
)

// Sentinel errors; the agent's RPC layer maps them to status codes.
var (
	// ErrNotFound: no container or process with that id.
	ErrNotFound = errors.New("not found")
	// ErrExists: the id is taken.
	ErrExists = errors.New("already exists")
	// ErrInvalidState: the request does not fit the current state (start a
	// running container, exec into a stopped one, ...).
	ErrInvalidState = errors.New("invalid state")
	// ErrInvalidSpec: the OCI spec or an argument is malformed.
	ErrInvalidSpec = errors.New("invalid spec")
	// ErrExec: the process could not be started (binary missing, not
	// executable, set-up failure); the message says why.
	ErrExec = errors.New("cannot start process")
	// ErrExecNotFound: the binary does not exist; it wraps ErrExec.
	ErrExecNotFound = fmt.Errorf("%w: executable not found", ErrExec)
	// ErrSetup: the container's mounts or namespaces could not be set up.
	ErrSetup = errors.New("container set-up failed")
	// ErrNoTerminal: a terminal operation on a process without one.
	ErrNoTerminal = errors.New("process has no terminal")
	// ErrNoStdin: the process was started without a stdin pipe, or it was
	// closed.
	ErrNoStdin = errors.New("stdin not open")
	// ErrUnsupported: the operation needs something this guest lacks
	// (cgroup v2 for resource updates).
	ErrUnsupported = errors.New("not supported")
)
