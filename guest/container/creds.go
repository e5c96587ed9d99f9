package container

import (
	"fmt"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

var rlimitNames = map[string]int{
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
}

// validateProcess checks the fields the agent honors.
func validateProcess(p *specs.Process) error {
	if p == nil {
		return fmt.Errorf("no process: %w", ErrInvalidSpec)
	}
	if len(p.Args) == 0 {
		return fmt.Errorf("process.args is empty: %w", ErrInvalidSpec)
	}
	for _, r := range p.Rlimits {
		if _, ok := rlimitNames[r.Type]; !ok {
			return fmt.Errorf("rlimit %q: %w", r.Type, ErrInvalidSpec)
		}
		if r.Soft > r.Hard {
			return fmt.Errorf("rlimit %s: soft %d > hard %d: %w", r.Type, r.Soft, r.Hard, ErrInvalidSpec)
		}
	}
	if p.Cwd != "" && p.Cwd[0] != '/' {
		return fmt.Errorf("process.cwd %q is not absolute: %w", p.Cwd, ErrInvalidSpec)
	}
	return nil
}

// setRlimits applies the process's rlimits (process-wide; inherited over
// exec and fork).
func setRlimits(p *specs.Process) error {
	for _, r := range p.Rlimits {
		lim := unix.Rlimit{Cur: r.Soft, Max: r.Hard}
		if err := unix.Setrlimit(rlimitNames[r.Type], &lim); err != nil {
			return fmt.Errorf("set %s: %w", r.Type, os.NewSyscallError("setrlimit", err))
		}
	}
	return nil
}

// setNoNewPrivs sets no_new_privs on the calling thread (which must be the
// one that execs or forks the process).
func setNoNewPrivs(p *specs.Process) error {
	if !p.NoNewPrivileges {
		return nil
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return os.NewSyscallError("prctl(PR_SET_NO_NEW_PRIVS)", err)
	}
	return nil
}

// setUser switches the calling thread to the process's user and groups.
// x/sys/unix's set*id calls change the calling thread only, which is what
// is wanted right before execve on a locked thread.
func setUser(u specs.User) error {
	groups := make([]int, len(u.AdditionalGids))
	for i, g := range u.AdditionalGids {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return os.NewSyscallError("setgroups", err)
	}
	if err := unix.Setresgid(int(u.GID), int(u.GID), int(u.GID)); err != nil {
		return os.NewSyscallError("setresgid", err)
	}
	if err := unix.Setresuid(int(u.UID), int(u.UID), int(u.UID)); err != nil {
		return os.NewSyscallError("setresuid", err)
	}
	return nil
}

// setUmask applies process.user.umask (default 0022).
func setUmask(u specs.User) {
	mask := 0o022
	if u.Umask != nil {
		mask = int(*u.Umask)
	}
	unix.Umask(mask)
}
