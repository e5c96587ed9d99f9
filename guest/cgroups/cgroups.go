// Package cgroups manages the agent's per-container cgroups (v2, the
// unified hierarchy, as mounted in an ember guest).
//
// Each container gets <root>/ember/<id>. Hosts with cgroup v1 (the
// development hosts, where tests run the agent as a normal process) are not
// managed: Available reports false and callers fall back to procfs figures.
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where the agent mounts cgroup2 in the guest.
const DefaultRoot = "/sys/fs/cgroup"

// parent is the cgroup under root that holds the containers' cgroups.
const parent = "ember"

// controllers are enabled for containers, where the kernel has them.
var controllers = []string{"cpu", "memory", "pids", "io", "cpuset"}

var (
	// ErrNotV2 means root is not a cgroup2 mount.
	ErrNotV2 = errors.New("not a cgroup v2 mount")
	// ErrInvalidID means a container id is not usable as a cgroup name.
	ErrInvalidID = errors.New("invalid cgroup name")
)

// Available reports whether root is a cgroup2 (unified) mount.
func Available(root string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return false
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC
}

// Hierarchy is a cgroup2 tree prepared for containers.
type Hierarchy struct {
	root string
}

// Open prepares root for containers: it creates root/ember and enables the
// available controllers for its children. checkFS is false only in tests
// that use a plain directory as a stand-in.
func Open(root string, checkFS bool) (*Hierarchy, error) {
	if checkFS && !Available(root) {
		return nil, fmt.Errorf("%s: %w", root, ErrNotV2)
	}
	h := &Hierarchy{root: root}
	if err := os.MkdirAll(filepath.Join(root, parent), 0o755); err != nil {
		return nil, fmt.Errorf("create cgroup parent: %w", err)
	}
	avail, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Errorf("read controllers: %w", err)
	}
	have := strings.Fields(string(avail))
	for _, dir := range []string{root, filepath.Join(root, parent)} {
		for _, c := range controllers {
			if !contains(have, c) {
				continue
			}
			// One write per controller: one that cannot be enabled (cpuset
			// on old kernels) must not keep the others off.
			_ = writeFile(filepath.Join(dir, "cgroup.subtree_control"), "+"+c)
		}
	}
	return h, nil
}

// Create makes the cgroup of container id.
func (h *Hierarchy) Create(id string) (*Group, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return nil, fmt.Errorf("%q: %w", id, ErrInvalidID)
	}
	dir := filepath.Join(h.root, parent, id)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	return &Group{dir: dir}, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}
