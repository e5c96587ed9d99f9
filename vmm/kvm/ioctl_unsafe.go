package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlPtr issues an ioctl whose argument is a pointer to p, retrying on
// EINTR. The uintptr conversion happens in the Syscall argument list, as the
// unsafe.Pointer rules require, so p stays valid (and pinned) for the call.
func ioctlPtr(fd uintptr, req uintptr, p unsafe.Pointer) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(p))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return r, errno
		}
		return r, nil
	}
}
