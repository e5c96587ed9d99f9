package sysinit

import (
	"fmt"
	"io"
	"os"
)

// ReadyMarker is printed on the console, alone on a line, once the agent
// listens: boot tests and the snapshot builder wait for it.
const ReadyMarker = "ember-agent ready"

// Console opens the agent's log output: /dev/console as PID 1 (falling
// back to /dev/kmsg, which prefixes kernel-log levels), stderr otherwise.
func Console() io.Writer {
	if !IsPID1() {
		return os.Stderr
	}
	for _, path := range []string{"/dev/console", "/dev/kmsg"} {
		if f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			return f
		}
	}
	return os.Stderr
}

// PrintReady writes the ready marker line to w.
func PrintReady(w io.Writer, detail string) {
	fmt.Fprintf(w, "%s %s\n", ReadyMarker, detail)
}
