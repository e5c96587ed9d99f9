package vmm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// takePending consumes the blocked, pending signals of set on this thread
// without waiting (rt_sigtimedwait with a zero timeout), so that they are
// not delivered when they are unblocked.
func takePending(set *unix.Sigset_t) {
	var zero unix.Timespec
	for {
		_, _, errno := unix.Syscall6(unix.SYS_RT_SIGTIMEDWAIT, uintptr(unsafe.Pointer(set)), 0,
			uintptr(unsafe.Pointer(&zero)), 8, 0, 0)
		if errno != 0 { // EAGAIN: none left
			return
		}
	}
}
