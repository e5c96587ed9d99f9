package container

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

var nsTypes = map[string]int{
	"ipc": unix.CLONE_NEWIPC,
	"uts": unix.CLONE_NEWUTS,
	"pid": unix.CLONE_NEWPID,
	"mnt": unix.CLONE_NEWNS,
}

// initExec runs in the agent's namespaces and starts a process inside a
// running container. A Go process cannot join a mount namespace while its
// threads share one fs_struct, so the locked main thread first unshares
// CLONE_FS; joining a pid namespace only affects children, so the program
// is forked (with CLONE_PARENT: it becomes the agent's child, and the agent
// reaps it) rather than exec'd in place. This process then exits.
func initExec(ch *initChannel, cfg *initConfig) int {
	proc := cfg.Process
	if cfg.HasCgroup {
		// Join the container's cgroup first: the child inherits it.
		f := os.NewFile(uintptr(cfg.CgroupFd), "cgroup.procs")
		if _, err := f.WriteString(strconv.Itoa(os.Getpid())); err != nil {
			ch.fail(fmt.Errorf("join cgroup: %w", err), true)
			return 1
		}
	}
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		ch.fail(os.NewSyscallError("unshare(CLONE_FS)", err), true)
		return 1
	}
	for _, ns := range cfg.NsFds {
		if err := unix.Setns(ns.Fd, nsTypes[ns.Type]); err != nil {
			ch.fail(fmt.Errorf("join %s namespace: %w", ns.Type, os.NewSyscallError("setns", err)), true)
			return 1
		}
	}
	// setns(mnt) put us at the namespace's root mount; the container's root
	// is what its init pivoted (or chrooted) to.
	if err := unix.Fchdir(cfg.RootFd); err != nil {
		ch.fail(os.NewSyscallError("fchdir(container root)", err), true)
		return 1
	}
	if err := unix.Chroot("."); err != nil {
		ch.fail(os.NewSyscallError("chroot", err), true)
		return 1
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
	if err := unix.Chdir(cwd); err != nil {
		ch.fail(fmt.Errorf("cwd %s: %w", cwd, err), true)
		return 1
	}
	if err := setRlimits(proc); err != nil {
		ch.fail(err, true)
		return 1
	}
	setUmask(proc.User)
	if err := setNoNewPrivs(proc); err != nil {
		ch.fail(err, true)
		return 1
	}
	groups := make([]uint32, len(proc.User.AdditionalGids))
	copy(groups, proc.User.AdditionalGids)
	pid, err := syscall.ForkExec(path, proc.Args, &syscall.ProcAttr{
		Env:   proc.Env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Cloneflags: unix.CLONE_PARENT,
			Setsid:     true,
			Setctty:    cfg.Terminal,
			Ctty:       0,
			Credential: &syscall.Credential{Uid: proc.User.UID, Gid: proc.User.GID, Groups: groups},
		},
	})
	if err != nil {
		ch.fail(fmt.Errorf("exec %q: %w", path, err), false)
		return 127
	}
	ch.send(initReply{Type: replyStarted, Pid: pid})
	return 0
}
