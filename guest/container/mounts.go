package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// This file runs in the container-init child, in the container's new mount
// namespace, before pivot_root.

// defaultDevices are created in a tmpfs /dev (OCI's default devices).
var defaultDevices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
	{"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// setupRootfs mounts the rootfs on dir and the spec's mounts inside it.
func setupRootfs(spec *specs.Spec, rootfs Rootfs, dir string) error {
	// Nothing done here may propagate back to the agent's namespace.
	if err := mountErr("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	if err := rootfs.mount(dir); err != nil {
		return err
	}
	devTmpfs := false
	for _, m := range spec.Mounts {
		if err := mountOne(dir, m); err != nil {
			return err
		}
		if filepath.Clean(m.Destination) == "/dev" && m.Type == "tmpfs" {
			devTmpfs = true
		}
	}
	if devTmpfs {
		if err := populateDev(dir, spec); err != nil {
			return err
		}
	}
	if spec.Root != nil && spec.Root.Readonly {
		if err := mountErr("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only rootfs: %w", err)
		}
	}
	return nil
}

// mountOne mounts one OCI mount inside root.
func mountOne(root string, m specs.Mount) error {
	if !filepath.IsAbs(m.Destination) {
		return fmt.Errorf("mount destination %q is not absolute: %w", m.Destination, ErrInvalidSpec)
	}
	dest, err := resolveInRoot(root, m.Destination)
	if err != nil {
		return err
	}
	flags, data := parseOptions(m.Options)
	if m.Type == "bind" {
		flags.bind = true
		flags.set |= unix.MS_BIND
	}
	if flags.bind {
		return bindMount(m.Source, dest, flags)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("mount %s: %w", m.Destination, err)
	}
	source := m.Source
	if source == "" {
		source = m.Type
	}
	if err := mountErr(source, dest, m.Type, flags.set, data); err != nil {
		return err
	}
	if flags.propagation != 0 {
		return mountErr("", dest, "", flags.propagation, "")
	}
	return nil
}

// bindMount binds source (a path in the agent's view) on dest, creating
// dest as a file or directory like the source, then applies the flags that
// a bind mount ignores on the first call (ro, nosuid, ...).
func bindMount(source, dest string, flags mountFlags) error {
	fi, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("bind source: %w", err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(dest, 0o755)
	} else {
		err = createFile(dest)
	}
	if err != nil {
		return fmt.Errorf("bind target: %w", err)
	}
	if err := mountErr(source, dest, "", unix.MS_BIND|(flags.set&unix.MS_REC), ""); err != nil {
		return err
	}
	if rest := flags.set &^ (unix.MS_BIND | unix.MS_REC | unix.MS_REMOUNT); rest != 0 {
		if err := mountErr("", dest, "", unix.MS_BIND|unix.MS_REMOUNT|rest, ""); err != nil {
			return err
		}
	}
	if flags.propagation != 0 {
		return mountErr("", dest, "", flags.propagation, "")
	}
	return nil
}

func createFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// populateDev creates the default device nodes, the spec's devices and the
// usual symlinks in a tmpfs /dev.
func populateDev(root string, spec *specs.Spec) error {
	dev := filepath.Join(root, "dev")
	for _, d := range defaultDevices {
		if err := makeDevice(filepath.Join(dev, d.name), unix.S_IFCHR|0o666, d.major, d.minor); err != nil {
			return err
		}
	}
	if spec.Linux != nil {
		for _, d := range spec.Linux.Devices {
			path, err := resolveInRoot(root, d.Path)
			if err != nil {
				return err
			}
			mode := uint32(0o666)
			if d.FileMode != nil {
				mode = uint32(*d.FileMode) & 0o7777
			}
			var typ uint32
			switch d.Type {
			case "c", "u":
				typ = unix.S_IFCHR
			case "b":
				typ = unix.S_IFBLK
			case "p":
				typ = unix.S_IFIFO
			default:
				return fmt.Errorf("device %s type %q: %w", d.Path, d.Type, ErrInvalidSpec)
			}
			if err := makeDevice(path, typ|mode, uint32(d.Major), uint32(d.Minor)); err != nil {
				return err
			}
		}
	}
	links := [][2]string{
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
		{"pts/ptmx", "ptmx"}, {"/proc/kcore", "core"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("dev symlink: %w", err)
		}
	}
	return nil
}

// makeDevice mknods a device node; where that is refused it bind-mounts the
// agent's node of the same name instead.
func makeDevice(path string, mode, major, minor uint32) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	err := unix.Mknod(path, mode, int(unix.Mkdev(major, minor)))
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	host := filepath.Join("/dev", filepath.Base(path))
	if err := createFile(path); err != nil {
		return fmt.Errorf("device %s: %w", path, err)
	}
	return mountErr(host, path, "", unix.MS_BIND, "")
}

// pivotRoot makes dir the root. pivot_root(".", ".") stacks the old root
// under the new one, which is then detached. An initramfs root cannot be
// pivoted away from (EINVAL); then the new root is moved onto / and
// chrooted into, as switch_root does.
func pivotRoot(dir string) error {
	oldRoot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("open /", err)
	}
	defer unix.Close(oldRoot)
	if err := unix.Chdir(dir); err != nil {
		return os.NewSyscallError("chdir", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return moveRoot(dir)
		}
		return os.NewSyscallError("pivot_root", err)
	}
	if err := unix.Fchdir(oldRoot); err != nil {
		return os.NewSyscallError("fchdir", err)
	}
	if err := mountErr("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return os.NewSyscallError("umount old root", err)
	}
	return os.NewSyscallError("chdir /", unix.Chdir("/"))
}

func moveRoot(dir string) error {
	if err := mountErr(dir, "/", "", unix.MS_MOVE, ""); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return os.NewSyscallError("chroot", err)
	}
	return os.NewSyscallError("chdir /", unix.Chdir("/"))
}

// maskPaths hides paths (spec.linux.maskedPaths): /dev/null over files, an
// empty read-only tmpfs over directories. Runs after pivot_root.
func maskPaths(paths []string) error {
	for _, p := range paths {
		fi, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
		if fi.IsDir() {
			err = mountErr("tmpfs", p, "tmpfs", unix.MS_RDONLY, "")
		} else {
			err = mountErr("/dev/null", p, "", unix.MS_BIND, "")
		}
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

// readonlyPaths remounts paths read-only (spec.linux.readonlyPaths).
func readonlyPaths(paths []string) error {
	for _, p := range paths {
		if err := mountErr(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return err
		}
		if err := mountErr("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
			return err
		}
	}
	return nil
}

// writeSysctls applies spec.linux.sysctl (namespaced keys only make sense).
func writeSysctls(sysctl map[string]string) error {
	for k, v := range sysctl {
		path := filepath.Join("/proc/sys", filepath.FromSlash(replaceDots(k)))
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", k, err)
		}
	}
	return nil
}

func replaceDots(k string) string {
	b := []byte(k)
	for i := range b {
		if b[i] == '.' {
			b[i] = '/'
		}
	}
	return string(b)
}
