// Package diskimage turns a host directory into an ext4 file system image
// with mkfs.ext4 -d (e2fsprogs): no loop devices, no mounts, no root
// privileges. The image is sized from the directory's contents with
// headroom and written atomically: a temporary file next to the
// destination, renamed over it only when mkfs.ext4 succeeded.
package diskimage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Sentinel errors.
var (
	// ErrMkfsMissing: mkfs.ext4 is not installed.
	ErrMkfsMissing = errors.New("diskimage: mkfs.ext4 not found (install e2fsprogs)")
	// ErrSource: the source is not a readable directory.
	ErrSource = errors.New("diskimage: invalid source directory")
	// ErrTooSmall: Options.Size cannot hold the contents.
	ErrTooSmall = errors.New("diskimage: image size too small for the contents")
	// ErrMkfs: mkfs.ext4 failed.
	ErrMkfs = errors.New("diskimage: mkfs.ext4 failed")
)

// Sizing constants.
const (
	blockSize = 4096
	// MinSize is the smallest image built: room for the ext4 metadata and
	// journal of a small file system.
	MinSize = 16 << 20
	// inodeOverhead is charged per directory entry on top of its data
	// blocks (inode table space and directory blocks).
	inodeOverhead = 512
	mib           = 1 << 20
)

// Options tune the image.
type Options struct {
	// Size is the image size in bytes; 0 sizes it from the contents:
	// (data blocks + per-entry overhead) * 5/4 + Headroom, at least
	// MinSize, rounded up to a MiB.
	Size int64
	// Headroom is free space added when sizing automatically; 0 means
	// 16 MiB.
	Headroom int64
	// Label is the file system label (at most 16 bytes).
	Label string
	// Mkfs is the mkfs.ext4 program; "" looks it up in PATH, /sbin and
	// /usr/sbin.
	Mkfs string
}

// usage is what a directory tree needs.
type usage struct {
	bytes   int64 // data, rounded to blocks
	entries int64
}

// measure walks dir.
func measure(dir string) (usage, error) {
	var u usage
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		u.entries++
		if d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0 {
			info, err := d.Info()
			if err != nil {
				return err
			}
			u.bytes += (info.Size() + blockSize - 1) / blockSize * blockSize
		} else if d.IsDir() {
			u.bytes += blockSize
		}
		return nil
	})
	return u, err
}

// AutoSize returns the image size Create picks for dir.
func AutoSize(dir string, headroom int64) (int64, error) {
	u, err := measure(dir)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrSource, err)
	}
	if headroom <= 0 {
		headroom = 16 * mib
	}
	size := (u.bytes+u.entries*inodeOverhead)*5/4 + headroom
	size = max(size, MinSize)
	return (size + mib - 1) / mib * mib, nil
}

// findMkfs locates mkfs.ext4.
func findMkfs(name string) (string, error) {
	if name != "" {
		p, err := exec.LookPath(name)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrMkfsMissing, name, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", ErrMkfsMissing
}

// Create builds an ext4 image of the directory src at dst.
func Create(ctx context.Context, src, dst string, opts Options) (err error) {
	mkfs, err := findMkfs(opts.Mkfs)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSource, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrSource, src)
	}
	u, err := measure(src)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSource, err)
	}
	size := opts.Size
	if size == 0 {
		if size, err = AutoSize(src, opts.Headroom); err != nil {
			return err
		}
	} else if size < MinSize || size < u.bytes {
		return fmt.Errorf("%w: %d bytes for %d bytes of data", ErrTooSmall, size, u.bytes)
	}
	if len(opts.Label) > 16 {
		return fmt.Errorf("diskimage: label %q longer than 16 bytes", opts.Label)
	}

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return fmt.Errorf("diskimage: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	err = tmp.Truncate(size)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("diskimage: %w", err)
	}

	// Enough inodes for the entries plus room to grow.
	inodes := max(u.entries*2, 4096)
	args := []string{"-q", "-F", "-t", "ext4", "-b", strconv.Itoa(blockSize),
		"-N", strconv.FormatInt(inodes, 10), "-m", "0", "-E", "root_owner=0:0", "-d", src}
	if opts.Label != "" {
		args = append(args, "-L", opts.Label)
	}
	args = append(args, tmp.Name())
	cmd := exec.CommandContext(ctx, mkfs, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		msg := bytes.TrimSpace(stderr.Bytes())
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", ErrMkfs, ctx.Err())
		}
		if bytes.Contains(msg, []byte("Could not allocate")) || bytes.Contains(msg, []byte("No space left")) {
			return fmt.Errorf("%w: %s", ErrTooSmall, msg)
		}
		return fmt.Errorf("%w: %w: %s", ErrMkfs, err, msg)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("diskimage: %w", err)
	}
	return nil
}
