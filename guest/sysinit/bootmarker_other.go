//go:build !amd64

package sysinit

import "errors"

// WriteBootMarker is only implemented on amd64 (an I/O port).
func WriteBootMarker(code uint8) error {
	return errors.New("boot marker: no I/O ports on this architecture")
}
