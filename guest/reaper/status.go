package reaper

import (
	"time"

	"golang.org/x/sys/unix"
)

// Status is how a process ended.
type Status struct {
	// Pid is the process that ended.
	Pid int
	// Code is the exit code, or 128+n for a death by signal n (the shell
	// convention, which is what containerd reports).
	Code int
	// Signal is the signal that killed the process, or 0.
	Signal unix.Signal
	// ExitedAt is when the agent reaped the process.
	ExitedAt time.Time
}

// StatusFromWait converts a wait4 status.
func StatusFromWait(pid int, ws unix.WaitStatus, at time.Time) Status {
	st := Status{Pid: pid, ExitedAt: at}
	switch {
	case ws.Exited():
		st.Code = ws.ExitStatus()
	case ws.Signaled():
		st.Signal = ws.Signal()
		st.Code = 128 + int(ws.Signal())
	default:
		// Stopped or continued: callers only pass terminal statuses.
		st.Code = 255
	}
	return st
}
