//go:build !amd64

package main

import "errors"

// writeBootMarker is x86 only.
func writeBootMarker(port uint16, code uint8) error {
	return errors.New("no I/O ports on this architecture")
}
