package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// RunInitIfRequested turns the process into a container-init child when it
// was started as one (argv[1] == InitArg) and never returns in that case.
// Call it first thing in main (and in TestMain of tests that start
// containers): the agent starts containers by re-executing its own binary,
// so that no second binary is needed in the guest.
func RunInitIfRequested() {
	if len(os.Args) < 2 || os.Args[1] != InitArg {
		return
	}
	// Credentials, no_new_privs and namespaces are per thread: do all of it
	// on the main thread, which then execs or forks.
	runtime.LockOSThread()
	os.Exit(runInit())
}

func runInit() int {
	// Nothing the agent handed over may leak into the user's process.
	if err := unix.CloseRange(initSockFd, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return 125
	}
	sock := os.NewFile(initSockFd, "init-sock")
	ch := &initChannel{enc: json.NewEncoder(sock), dec: json.NewDecoder(sock)}
	var cfg initConfig
	if err := ch.dec.Decode(&cfg); err != nil {
		return 125
	}
	switch cfg.Mode {
	case modeCreate:
		return initCreate(ch, &cfg)
	case modeExec:
		return initExec(ch, &cfg)
	}
	ch.fail(fmt.Errorf("unknown init mode %q", cfg.Mode), false)
	return 125
}

type initChannel struct {
	enc *json.Encoder
	dec *json.Decoder
}

func (c *initChannel) send(r initReply) { _ = c.enc.Encode(r) }

// fail reports err to the agent; setup marks set-up (not exec) failures.
func (c *initChannel) fail(err error, setup bool) {
	c.send(initReply{
		Type:     replyError,
		Error:    err.Error(),
		NotFound: errors.Is(err, os.ErrNotExist) && !setup,
		Setup:    setup,
	})
}

// initCreate runs in the container's new mount, pid, uts and ipc
// namespaces: it builds the container's filesystem view, reports ready,
// waits for start and execs the user's program in place (so that program is
// the container's pid 1 and the agent's direct child).
func initCreate(ch *initChannel, cfg *initConfig) int {
	spec := cfg.Spec
	proc := spec.Process
	if err := setupRootfs(spec, cfg.Rootfs, cfg.RootfsDir); err != nil {
		ch.fail(err, true)
		return 1
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			ch.fail(os.NewSyscallError("sethostname", err), true)
			return 1
		}
	}
	if err := pivotRoot(cfg.RootfsDir); err != nil {
		ch.fail(err, true)
		return 1
	}
	if l := spec.Linux; l != nil {
		if err := writeSysctls(l.Sysctl); err != nil {
			ch.fail(err, true)
			return 1
		}
		if err := maskPaths(l.MaskedPaths); err != nil {
			ch.fail(err, true)
			return 1
		}
		if err := readonlyPaths(l.ReadonlyPaths); err != nil {
			ch.fail(err, true)
			return 1
		}
	}
	cwd := proc.Cwd
	if cwd == "" {
		cwd = "/"
	}
	path, err := lookPath(proc.Args[0], proc.Env, cwd)
	if err != nil {
		ch.fail(err, false)
		return 127
	}
	ch.send(initReply{Type: replyReady})

	var start initStart
	if err := ch.dec.Decode(&start); err != nil || !start.Start {
		// The agent went away or removed the container before start.
		return 1
	}
	if err := prepareExec(cwd, proc); err != nil {
		ch.fail(err, true)
		return 1
	}
	if err := setUser(proc.User); err != nil {
		ch.fail(err, true)
		return 1
	}
	err = unix.Exec(path, proc.Args, proc.Env)
	ch.fail(fmt.Errorf("exec %q: %w", path, err), false)
	return 127
}

// prepareExec does what must happen in the process itself right before the
// user's program: session and controlling terminal, cwd, rlimits, umask,
// no_new_privs.
func prepareExec(cwd string, p *specs.Process) error {
	if _, err := unix.Setsid(); err != nil {
		return os.NewSyscallError("setsid", err)
	}
	if p.Terminal {
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return os.NewSyscallError("ioctl(TIOCSCTTY)", err)
		}
	}
	if err := unix.Chdir(cwd); err != nil {
		return fmt.Errorf("cwd %s: %w", cwd, err)
	}
	if err := setRlimits(p); err != nil {
		return err
	}
	setUmask(p.User)
	return setNoNewPrivs(p)
}
