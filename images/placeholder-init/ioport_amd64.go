package main

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// outb writes v to an I/O port; the caller has I/O permission for it.
func outb(port uint16, v uint8)

// writeBootMarker writes code to the boot marker port.
// ioperm's permission belongs to the calling thread, so the goroutine
// stays on one thread until the OUT instruction ran.
func writeBootMarker(port uint16, code uint8) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(int(port), 1, 1); err != nil {
		return err
	}
	outb(port, code)
	return nil
}
