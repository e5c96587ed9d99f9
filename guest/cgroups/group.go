package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Group is one container's cgroup.
type Group struct {
	dir string
}

// Path is the cgroup's directory.
func (g *Group) Path() string { return g.dir }

// AddProc moves pid into the group.
func (g *Group) AddProc(pid int) error {
	return writeFile(filepath.Join(g.dir, "cgroup.procs"), strconv.Itoa(pid))
}

// OpenProcs opens cgroup.procs for writing: a process that is handed the
// file can move itself in (by writing its pid) from another mount
// namespace.
func (g *Group) OpenProcs() (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(g.dir, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup.procs: %w", err)
	}
	return f, nil
}

// Pids lists the processes in the group.
func (g *Group) Pids() ([]int, error) {
	data, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("read cgroup.procs: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse cgroup.procs: %w", err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Destroy removes the group; it must hold no process.
func (g *Group) Destroy() error {
	err := unix.Rmdir(g.dir)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", g.dir, err)
	}
	return nil
}
