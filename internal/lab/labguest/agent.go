// Package labguest is the nested lab's guest agent. It runs as PID 1 of the
// L1 Linux (ember's own binary started as "ember lab guest-init"): it mounts
// the pseudo file systems, loads the kernel modules the host listed, runs the
// requested command and relays its output and exit status to the host over a
// virtio-serial port (see package labproto), then powers L1 off.
package labguest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/lab/labproto"
)

// ErrNotPID1 means Main was called in a process that is not init.
var ErrNotPID1 = errors.New("labguest: not running as PID 1 in the lab")

// Timeouts of the agent's bounded waits.
const (
	portWait = 20 * time.Second // for the virtio-serial port to appear
	ackWait  = 10 * time.Second // for the host to acknowledge the exit frame
	// outputDrain bounds how long output pipes are read after the command
	// exits, in case a background child still holds them open.
	outputDrain = 2 * time.Second
)

// Main runs the agent. It only returns on failure before the command could
// be started or the port opened; the caller should then log the error and
// call PowerOff.
func Main(ctx context.Context) error {
	if os.Getpid() != 1 {
		return ErrNotPID1
	}
	if err := mountAll(); err != nil {
		return err
	}
	spec, err := readSpec()
	if err != nil {
		return err
	}
	if err := loadModules(spec.Modules); err != nil {
		return err
	}
	setupHost(spec.HostTime)
	slog.Info("lab agent: up", "modules", len(spec.Modules))
	port, err := openPort(ctx, labproto.PortName, portWait)
	if err != nil {
		return err
	}
	// Read the port from now on: the host's Nudge bytes (one a second)
	// must be consumed, or the port's receive buffers run out and the
	// nudges' interrupts with them.
	acked := readAcks(port)
	fw := labproto.NewFrameWriter(port)
	if err := fw.WriteFrame(labproto.Hello, bootTime()); err != nil {
		return err
	}
	if text := kernelText(); text != "" {
		if err := fw.WriteFrame(labproto.KernelText, []byte(text)); err != nil {
			return err
		}
	}
	slog.Info("lab agent: running command", "args", spec.Args)
	code, runErr := runCommand(ctx, spec, fw)
	slog.Info("lab agent: command finished", "status", code, "err", runErr)
	if runErr != nil {
		slog.Error("lab agent: command failed to start", "err", runErr)
		err = fw.WriteFrame(labproto.Fail, []byte(runErr.Error()))
	} else {
		err = fw.WriteFrame(labproto.Exit, []byte(strconv.Itoa(code)))
	}
	if err != nil {
		return err
	}
	waitAck(acked, ackWait)
	PowerOff()
	return nil
}

// PowerOff syncs file systems and ends L1. The kernel is booted with
// reboot=t and QEMU with -no-reboot, so a restart request makes QEMU exit.
func PowerOff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		slog.Error("lab agent: reboot", "err", err)
	}
	// PID 1 must not exit: the kernel would panic. (Not select{}: with no
	// other goroutine the runtime calls that a deadlock and exits.)
	for {
		time.Sleep(time.Hour)
	}
}

func readSpec() (*labproto.Spec, error) {
	b, err := os.ReadFile(labproto.SpecPath)
	if err != nil {
		return nil, fmt.Errorf("labguest: read spec: %w", err)
	}
	var s labproto.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("labguest: parse spec: %w", err)
	}
	if len(s.Args) == 0 {
		return nil, fmt.Errorf("labguest: spec has no command")
	}
	return &s, nil
}

// runCommand runs the spec's command with its output streamed as frames and
// returns its exit status. An error means it could not be started.
func runCommand(ctx context.Context, spec *labproto.Spec, fw *labproto.FrameWriter) (int, error) {
	path, err := lookPath(spec.Args[0], spec.Env)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, path, spec.Args[1:]...)
	cmd.Args = spec.Args
	cmd.Env = spec.Env
	cmd.Dir = spec.Dir
	cmd.Stdout = fw.Stream(labproto.Stdout)
	cmd.Stderr = fw.Stream(labproto.Stderr)
	cmd.WaitDelay = outputDrain
	if err := fw.WriteFrame(labproto.Start, bootTime()); err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %q: %w", spec.Args[0], err)
	}
	stopBeats := make(chan struct{})
	go func() {
		if spec.Heartbeat <= 0 {
			return
		}
		t := time.NewTicker(spec.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				fw.WriteFrame(labproto.Heartbeat, nil)
			case <-stopBeats:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(stopBeats)
	st := cmd.ProcessState
	if st == nil {
		return 0, fmt.Errorf("wait %q: %w", spec.Args[0], err)
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return st.ExitCode(), nil
}

// lookPath resolves name against the PATH in the command's environment
// (not the agent's own), as a shell would.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/bin:/sbin:/usr/bin:/usr/sbin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: %w (PATH=%s)", name, exec.ErrNotFound, path)
}

// bootTime returns CLOCK_BOOTTIME in nanoseconds, as decimal text.
func bootTime() []byte {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return []byte(strconv.FormatInt(ts.Nano(), 10))
}

// readAcks reads the port until the host's Ack (or an error), dropping
// Nudge bytes; the returned channel is closed then.
func readAcks(port *os.File) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [64]byte
		for {
			n, err := port.Read(b[:])
			for _, c := range b[:n] {
				if c == labproto.Ack {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return done
}

// waitAck waits up to d for the host's acknowledgement byte.
func waitAck(acked <-chan struct{}, d time.Duration) {
	select {
	case <-acked:
	case <-time.After(d):
		slog.Warn("lab agent: no acknowledgement from the host", "waited", d)
	}
}

// kernelText returns the running kernel's _text address from
// /proc/kallsyms (hex, as printed there), or "" if it is hidden.
func kernelText() string {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 3 && fs[2] == "_text" {
			if strings.Trim(fs[0], "0") == "" {
				return "" // kptr_restrict hides it
			}
			return fs[0]
		}
	}
	return ""
}
