// Command placeholder-init is a stand-in guest /init until ember's agent
// lands: it mounts /proc, /sys and /dev, prints Marker on the console,
// writes the boot-time marker (vmm/devices/bootmarker), runs the command
// given after "--" on the kernel command line (through /bin/sh -c when the
// image has a shell), prints its exit status and restarts the machine with
// reboot(2), which with reboot=k reaches the VMM's i8042 and stops the VM.
//
// The signals through which busybox's halt, poweroff and reboot (and the
// kernel, for SIGINT/SIGPWR) ask init to end the system (SIGUSR1, SIGUSR2,
// SIGTERM, SIGINT, SIGPWR) also restart the machine at once: ember's VMM
// has no ACPI, so a real power-off would only halt the guest's CPUs.
//
// Build it static: CGO_ENABLED=0 go build ./images/placeholder-init
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Marker starts every line this program prints, so that tests can find it.
const Marker = "EMBER-PLACEHOLDER-INIT:"

// Boot marker port and code (see vmm/devices/bootmarker).
const (
	bootMarkerPort = 0x3f0
	bootMarkInit   = 123
)

func main() {
	setupConsole()
	for _, m := range []struct{ src, dir, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := mount(m.src, m.dir, m.fstype); err != nil {
			say("mount %s: %v", m.dir, err)
		}
	}
	setupConsole()
	say("up")
	go endOnSignal()
	if err := writeBootMarker(bootMarkerPort, bootMarkInit); err != nil {
		say("boot marker: %v", err)
	}
	if args := os.Args[1:]; len(args) > 0 {
		say("exit %d", run(args))
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		say("reboot: %v", err)
	}
	// PID 1 must not exit (not select{}: with no other goroutine the
	// runtime calls that a deadlock and exits).
	for {
		time.Sleep(time.Hour)
	}
}

// endOnSignal restarts the machine when asked to halt, power off or
// reboot.
func endOnSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, unix.SIGUSR1, unix.SIGUSR2, unix.SIGTERM, unix.SIGINT, unix.SIGPWR)
	sig := <-c
	say("signal %v: restarting", sig)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		say("reboot: %v", err)
	}
}

// say prints a marker line on the console.
func say(format string, a ...any) {
	fmt.Fprintf(os.Stdout, "%s %s\n", Marker, fmt.Sprintf(format, a...))
}

// setupConsole makes /dev/console stdin, stdout and stderr when the kernel
// could not (an initramfs without a /dev/console node).
func setupConsole() {
	if _, err := unix.FcntlInt(1, unix.F_GETFD, 0); err == nil {
		return
	}
	fd, err := unix.Open("/dev/console", unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return
	}
	for i := 0; i < 3; i++ {
		unix.Dup2(fd, i)
	}
	if fd > 2 {
		unix.Close(fd)
	}
}

// mount mounts a pseudo file system, creating the mount point.
func mount(src, dir, fstype string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	err := unix.Mount(src, dir, fstype, unix.MS_NOSUID|unix.MS_NOEXEC, "")
	if errors.Is(err, unix.EBUSY) {
		return nil
	}
	return err
}

// run runs the command and returns its exit status (-1 if it did not
// start).
func run(args []string) int {
	var cmd *exec.Cmd
	if _, err := os.Stat("/bin/sh"); err == nil {
		cmd = exec.Command("/bin/sh", "-c", strings.Join(args, " "))
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		say("run %q: %v", args, err)
		return -1
	}
	return 0
}
