package vmm

import (
	"os"

	"golang.org/x/sys/unix"
)

// kickSignal interrupts a vCPU thread in KVM_RUN. The Go runtime installs a
// handler for every signal, so KVM sees it pending and returns EINTR; its
// default action (ignore) means a stray one harms nothing. gVisor's KVM
// platform makes the same choice.
const kickSignal = unix.SIGCHLD

var pid = os.Getpid()

// tgkill sends the kick signal to one thread of this process.
func tgkill(tid int) error {
	for {
		err := unix.Tgkill(pid, tid, kickSignal)
		if err != unix.EINTR {
			return err
		}
	}
}
