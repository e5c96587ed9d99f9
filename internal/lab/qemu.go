package lab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/lab/labproto"
)

// File descriptors of the QEMU child: ExtraFiles start at 3.
const (
	initrdFD  = 3
	channelFD = 4
	// monitorFD (monitor.go) = 5
)

// kernelCmdline is L1's kernel command line (see tscKHz for
// tsc_early_khz). reboot=t with QEMU's
// -no-reboot turns the agent's final restart (and panic=-1) into QEMU
// exiting. Everything after "--" is passed to the init process.
func kernelCmdline(extra []string) string {
	args := []string{"console=ttyS0", "reboot=t", "panic=-1", "rdinit=" + GuestEmber,
		// QEMU's emulated virtual GIF can leave L1's own interrupts
		// pending while an L2 guest runs without exits, freezing L1 (seen
		// as whole-lab hangs under load); without vGIF, KVM intercepts
		// interrupt windows itself.
		"kvm_amd.vgif=0",
		// Likewise the other optional SVM extensions QEMU emulates:
		// virtual VMLOAD/VMSAVE and LBR virtualization.
		"kvm_amd.vls=0", "kvm_amd.lbrv=0"}
	if khz := tscKHz(); khz > 0 {
		args = append(args, "tsc_early_khz="+strconv.FormatUint(khz, 10), "tsc=reliable")
	}
	args = append(args, extra...)
	args = append(args, "--", "lab", "guest-init")
	return strings.Join(args, " ")
}

// qemuArgs builds QEMU's arguments for L1. The initramfs and the agent's
// channel are inherited file descriptors, so a run leaves no files behind.
func qemuArgs(cfg *Config, kernelImage string) []string {
	accel := "tcg"
	if cfg.CPUs > 1 {
		accel = "tcg,thread=multi"
	}
	return []string{
		"-M", "microvm,x-option-roms=off,isa-serial=on,rtc=on",
		"-accel", accel,
		"-cpu", "max",
		"-smp", strconv.Itoa(cfg.CPUs),
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-serial", "stdio",
		"-kernel", kernelImage,
		"-initrd", "/proc/self/fd/" + strconv.Itoa(initrdFD),
		"-append", kernelCmdline(cfg.KernelArgs),
		"-chardev", "socket,id=lab,fd=" + strconv.Itoa(channelFD),
		"-device", "virtio-serial-device,max_ports=2",
		"-device", "virtserialport,chardev=lab,name=" + labproto.PortName,
		"-chardev", "socket,id=mon,fd=" + strconv.Itoa(monitorFD),
		"-mon", "chardev=mon,mode=readline",
	}
}

// machine is a running QEMU process.
type machine struct {
	cmd  *exec.Cmd
	conn *os.File   // host end of the agent's channel
	mon  *os.File   // host end of QEMU's human monitor
	done chan error // receives cmd.Wait's result once
	errb *tail      // QEMU's own stderr
}

// startMachine starts QEMU with its serial console copied to console. QEMU
// runs in its own process group, which kill ends, and gets SIGKILL if the
// thread that started it dies (PR_SET_PDEATHSIG); that thread is locked
// until QEMU is reaped so that the Go runtime cannot retire it early.
func startMachine(qemu string, args []string, initrd *os.File, console io.Writer) (*machine, error) {
	host, guest, err := socketPair("lab-channel")
	if err != nil {
		return nil, err
	}
	defer guest.Close()
	mon, qmon, err := socketPair("lab-monitor")
	if err != nil {
		host.Close()
		return nil, err
	}
	defer qmon.Close()

	m := &machine{conn: host, mon: mon, done: make(chan error, 1), errb: newTail(4 << 10)}
	m.cmd = exec.Command(qemu, args...)
	m.cmd.Stdout = console
	m.cmd.Stderr = m.errb
	m.cmd.ExtraFiles = []*os.File{initrd, guest, qmon}
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := m.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		m.done <- m.cmd.Wait()
	}()
	if err := <-started; err != nil {
		host.Close()
		mon.Close()
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %w", ErrQEMUMissing, err)
		}
		return nil, fmt.Errorf("lab: start qemu: %w", err)
	}
	return m, nil
}

// socketPair returns a connected stream pair: the host end (non-blocking,
// so that deadlines work) and the end QEMU inherits.
func socketPair(name string) (host, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("lab: socketpair: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("lab: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), name), os.NewFile(uintptr(fds[1]), name+"-qemu"), nil
}

// kill ends QEMU's process group; Wait's result still arrives on done.
func (m *machine) kill() {
	if p := m.cmd.Process; p != nil {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
}
