package kvm

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// ioctl issues an ioctl whose argument is a plain integer, retrying on EINTR.
// It is not used for KVM_RUN, whose EINTR is meaningful.
func ioctl(fd uintptr, req, arg uintptr) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return r, errno
		}
		return r, nil
	}
}

// wrap names the ioctl that failed, keeping the errno for errors.Is.
func wrap(name string, err error) error {
	if err == nil {
		return nil
	}
	return os.NewSyscallError(name, err)
}

// IsInterrupted reports whether err is the EINTR that KVM_RUN returns when a
// signal or immediate_exit stopped it.
func IsInterrupted(err error) bool { return errors.Is(err, unix.EINTR) }
