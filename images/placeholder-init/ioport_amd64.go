package main

import "golang.org/x/sys/unix"

// outb writes v to an I/O port; the caller has I/O permission for it.
func outb(port uint16, v uint8)

// writeBootMarker writes code to the boot marker port.
func writeBootMarker(port uint16, code uint8) error {
	if err := unix.Ioperm(int(port), 1, 1); err != nil {
		return err
	}
	outb(port, code)
	return nil
}
