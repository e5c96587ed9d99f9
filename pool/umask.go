package pool

import "golang.org/x/sys/unix"

// umask sets the process umask so a socket is created with the right mode
// from the start (no window where it is world-accessible).
func umask(m int) int { return unix.Umask(m) }
