package container

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Rootfs is where a container's root filesystem comes from: a block device
// the host attached (/dev/vdb, ext4 or erofs) or, in tests and for
// pre-mounted trees, a directory that is bind-mounted.
type Rootfs struct {
	Source   string   `json:"source"`
	FSType   string   `json:"fstype,omitempty"`
	Options  []string `json:"options,omitempty"`
	Readonly bool     `json:"readonly,omitempty"`
}

// fsTypes are probed, in order, for a block device with no type given.
var fsTypes = []string{"ext4", "erofs", "xfs", "btrfs", "squashfs", "vfat"}

// mount mounts the rootfs on target (in the child's mount namespace).
func (r Rootfs) mount(target string) error {
	st, err := os.Stat(r.Source)
	if err != nil {
		return fmt.Errorf("rootfs source: %w", err)
	}
	flags, data := parseOptions(r.Options)
	if r.Readonly {
		flags.set |= unix.MS_RDONLY
	}
	switch {
	case st.IsDir():
		if err := mountErr(r.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return err
		}
		if flags.set&^unix.MS_REC != 0 {
			return mountErr("", target, "", unix.MS_BIND|unix.MS_REMOUNT|flags.set, "")
		}
		return nil
	case st.Mode()&os.ModeDevice != 0:
		types := fsTypes
		if r.FSType != "" {
			types = []string{r.FSType}
		}
		var errs []string
		for _, t := range types {
			err := mountErr(r.Source, target, t, flags.set, data)
			if err == nil {
				return nil
			}
			errs = append(errs, err.Error())
		}
		return fmt.Errorf("mount rootfs %s: %s", r.Source, strings.Join(errs, "; "))
	default:
		return fmt.Errorf("rootfs source %s is neither a directory nor a block device: %w", r.Source, ErrInvalidSpec)
	}
}

// mountErr is mount(2) with the arguments in the error.
func mountErr(source, target, fstype string, flags uintptr, data string) error {
	for {
		err := unix.Mount(source, target, fstype, flags, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("mount %q on %q (type %q, flags %#x, data %q): %w", source, target, fstype, flags, data, err)
		}
		return nil
	}
}
