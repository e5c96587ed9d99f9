package hostcheck

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func checkUserfaultfd(r *Report) {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno == 0 {
		unix.Close(int(fd))
		r.add(Check{Name: "userfaultfd", Status: OK, Detail: "userfaultfd(2) works (uffd and prefetch restore backends)"})
		return
	}
	if f, err := os.OpenFile("/dev/userfaultfd", os.O_RDWR, 0); err == nil {
		f.Close()
		r.add(Check{Name: "userfaultfd", Status: OK, Detail: "/dev/userfaultfd opens (uffd and prefetch restore backends)"})
		return
	}
	r.add(Check{Name: "userfaultfd", Status: No,
		Detail: fmt.Sprintf("userfaultfd(2): %v and /dev/userfaultfd unusable: only copy and mmap restores", errno)})
}

func checkTun(r *Report) {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		r.add(Check{Name: "/dev/net/tun", Status: No, Detail: err.Error() + ": no guest networking"})
		return
	}
	f.Close()
	r.add(Check{Name: "/dev/net/tun", Status: OK, Detail: "TAP devices for guest networking"})
}

func checkVhostVsock(r *Report) {
	f, err := os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0)
	if err != nil {
		detail := err.Error()
		if errors.Is(err, os.ErrNotExist) {
			detail = "/dev/vhost-vsock does not exist"
		}
		r.add(Check{Name: "vhost-vsock", Status: No, Detail: detail + " (not needed: ember's vsock device runs in the VMM)"})
		return
	}
	f.Close()
	r.add(Check{Name: "vhost-vsock", Status: OK, Detail: "/dev/vhost-vsock opens"})
}

func checkCgroup(r *Report) {
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		r.add(Check{Name: "cgroup v2", Status: No, Detail: "/sys/fs/cgroup: " + err.Error()})
		return
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		r.add(Check{Name: "cgroup v2", Status: OK, Detail: "unified hierarchy at /sys/fs/cgroup"})
		return
	}
	r.add(Check{Name: "cgroup v2", Status: No, Detail: "cgroup v1 hierarchy at /sys/fs/cgroup (ember handles v1 too)"})
}
