// Package sysinit does what PID 1 of an ember VM owes the system: the
// pseudo filesystems, the hostname, the console, a clean power-off. None of
// it runs when the agent is not PID 1.
package sysinit

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// IsPID1 reports whether this process is init.
func IsPID1() bool { return os.Getpid() == 1 }

// Mount is one filesystem PID 1 mounts at boot.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// BootMounts are mounted in order by MountAll.
var BootMounts = []Mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate"},
}

// MountAll mounts BootMounts; one that is already mounted (the kernel may
// have mounted devtmpfs) is skipped.
func MountAll() error {
	var errs []error
	for _, m := range BootMounts {
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.Target, err))
			continue
		}
		err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data)
		if errors.Is(err, unix.EBUSY) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.FSType, m.Target, err))
		}
	}
	if _, err := os.Lstat("/dev/ptmx"); err != nil {
		_ = os.Symlink("pts/ptmx", "/dev/ptmx")
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		_ = os.Symlink(l[0], l[1])
	}
	return errors.Join(errs...)
}

// SetHostname sets the VM's hostname.
func SetHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return os.NewSyscallError("sethostname", err)
	}
	return nil
}

// DisableCtrlAltDel makes the kernel send SIGINT to PID 1 on
// Ctrl-Alt-Del (the VMM's "send ctrl-alt-del") instead of rebooting.
func DisableCtrlAltDel() error {
	return os.NewSyscallError("reboot(CAD_OFF)", unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF))
}

// PowerOff syncs the filesystems and ends the VM. It returns only on
// failure.
//
// It restarts rather than powers off: ember's VMM has no ACPI, so the guest
// kernel has no power-off method and reboot(POWER_OFF) would only halt the
// CPUs (the VMM would never learn that the guest is done). A restart with
// the kernel's reboot=k (ember's default command line) resets through the
// i8042, which ember's VMM turns into a clean stop of the VM.
func PowerOff() error {
	unix.Sync()
	return os.NewSyscallError("reboot(RESTART)", unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART))
}
