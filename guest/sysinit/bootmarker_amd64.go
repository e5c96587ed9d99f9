package sysinit

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// outb writes v to an I/O port; the calling thread has permission for it.
func outb(port uint16, v uint8)

// WriteBootMarker writes code to the boot marker port. The I/O permission
// bitmap that ioperm(2) grants belongs to the calling thread, so the
// goroutine stays on one thread from ioperm to the OUT instruction, and the
// thread gives the permission back before it is released. It needs
// CAP_SYS_RAWIO and a kernel with CONFIG_X86_IOPL_IOPERM.
func WriteBootMarker(code uint8) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Ioperm(BootMarkerPort, 1, 1); err != nil {
		return os.NewSyscallError("ioperm", err)
	}
	outb(BootMarkerPort, code)
	return os.NewSyscallError("ioperm", unix.Ioperm(BootMarkerPort, 1, 0))
}
