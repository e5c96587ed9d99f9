// Package rootfs turns the mounts containerd gives a task (an overlayfs
// snapshot, a bind mount, a block device) into a disk a VM can attach as a
// virtio-blk drive.
//
// Directory trees become ext4 images (images/diskimage). An overlay whose
// upper directory is empty (a fresh container of an image) is the image's
// layers alone: its ext4 image is cached under a key made of the layer
// directories, so a second container of the same image costs a sparse copy
// of the cached image, not an mkfs. Each container gets its own copy,
// because its root is writable. Block mounts (ext4, xfs, erofs on a device
// or a file) are attached as they are.
package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/embervm/ember/images/diskimage"
	"golang.org/x/sys/unix"
)

// Sentinel errors.
var (
	// ErrUnsupported: mounts this package cannot turn into a drive.
	ErrUnsupported = errors.New("rootfs: unsupported mounts")
)

// Mount is one containerd mount (types.Mount without the protobuf).
type Mount struct {
	Type    string
	Source  string
	Target  string
	Options []string
}

// Drive is a disk to attach for a container's root.
type Drive struct {
	// Path is the image file or block device on the host.
	Path string
	// FSType is the file system on it (ext4, erofs, ...; "" to probe).
	FSType   string
	ReadOnly bool
	// Owned drives are removed by Cleanup (per-container copies).
	Owned bool
}

// Result says how a drive was made.
type Result struct {
	// Kind is "cached" (copy of a cached image), "built" (new image,
	// cached), "built-uncached", or "block".
	Kind string
	// Key is the cache key ("" if not cached).
	Key string
	// Build is the time spent in mkfs (0 on a cache hit); Copy the time to
	// copy the cached image.
	Build, Copy time.Duration
}

// Cache builds and caches rootfs images.
type Cache struct {
	// Dir holds the cached images (<key>.ext4).
	Dir string
	// Mkfs overrides the mkfs.ext4 binary.
	Mkfs string

	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// keyLock serializes builds of one key within this process; across
// processes the atomic rename in diskimage makes a double build harmless.
func (c *Cache) keyLock(key string) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.locks == nil {
		c.locks = map[string]*sync.Mutex{}
	}
	l, ok := c.locks[key]
	if !ok {
		l = &sync.Mutex{}
		c.locks[key] = l
	}
	return l
}

// blockTypes are mount types attached as drives as they are.
var blockTypes = []string{"ext4", "ext3", "ext2", "xfs", "erofs", "btrfs", "squashfs"}

// Plan is what Prepare will do with a set of mounts (exposed for tests).
type Plan struct {
	// Block: attach Source directly.
	Block *Drive
	// Dirs are the trees to merge, topmost first; one dir is used as is,
	// several are mounted as a read-only overlay.
	Dirs []string
	// Key is the cache key, "" when the tree must not be cached.
	Key string
}

// PlanMounts decides how mounts become a drive.
func PlanMounts(mounts []Mount) (Plan, error) {
	if len(mounts) != 1 {
		return Plan{}, fmt.Errorf("%w: %d mounts (want exactly one)", ErrUnsupported, len(mounts))
	}
	m := mounts[0]
	opts := map[string]string{}
	readOnly := false
	for _, o := range m.Options {
		k, v, _ := strings.Cut(o, "=")
		opts[k] = v
		if o == "ro" {
			readOnly = true
		}
	}
	switch {
	case slices.Contains(blockTypes, m.Type):
		return Plan{Block: &Drive{Path: m.Source, FSType: m.Type, ReadOnly: readOnly}}, nil
	case m.Type == "bind" || m.Type == "rbind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind"):
		// A native-snapshotter rootfs: the container's own copy, not cacheable.
		return Plan{Dirs: []string{m.Source}}, nil
	case m.Type == "overlay":
		lower := opts["lowerdir"]
		if lower == "" {
			return Plan{}, fmt.Errorf("%w: overlay without lowerdir", ErrUnsupported)
		}
		lowers := strings.Split(lower, ":")
		upper := opts["upperdir"]
		if upper != "" {
			empty, err := isEmptyDir(upper)
			if err != nil {
				return Plan{}, fmt.Errorf("rootfs: upperdir: %w", err)
			}
			if !empty {
				return Plan{Dirs: append([]string{upper}, lowers...)}, nil
			}
		}
		h := sha256.Sum256([]byte("overlay\x00" + strings.Join(lowers, "\x00")))
		return Plan{Dirs: lowers, Key: hex.EncodeToString(h[:16])}, nil
	}
	return Plan{}, fmt.Errorf("%w: mount type %q", ErrUnsupported, m.Type)
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}

// Prepare makes the drive for mounts; a per-container image goes to
// workDir/rootfs.ext4.
func (c *Cache) Prepare(ctx context.Context, mounts []Mount, workDir string) (Drive, Result, error) {
	plan, err := PlanMounts(mounts)
	if err != nil {
		return Drive{}, Result{}, err
	}
	if plan.Block != nil {
		return *plan.Block, Result{Kind: "block"}, nil
	}
	dst := filepath.Join(workDir, "rootfs.ext4")
	if plan.Key == "" {
		t := time.Now()
		if err := c.build(ctx, plan.Dirs, workDir, dst); err != nil {
			return Drive{}, Result{}, err
		}
		return Drive{Path: dst, FSType: "ext4", Owned: true}, Result{Kind: "built-uncached", Build: time.Since(t)}, nil
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return Drive{}, Result{}, fmt.Errorf("rootfs cache: %w", err)
	}
	res := Result{Kind: "cached", Key: plan.Key}
	cached := filepath.Join(c.Dir, plan.Key+".ext4")
	l := c.keyLock(plan.Key)
	l.Lock()
	if _, err := os.Stat(cached); errors.Is(err, os.ErrNotExist) {
		t := time.Now()
		err = c.build(ctx, plan.Dirs, c.Dir, cached)
		res.Kind, res.Build = "built", time.Since(t)
		if err != nil {
			l.Unlock()
			return Drive{}, Result{}, err
		}
	}
	l.Unlock()
	t := time.Now()
	if err := CopySparse(cached, dst); err != nil {
		return Drive{}, Result{}, err
	}
	res.Copy = time.Since(t)
	return Drive{Path: dst, FSType: "ext4", Owned: true}, res, nil
}

// build makes an ext4 image of dirs (merged through a read-only overlay
// when there are several) at dst.
func (c *Cache) build(ctx context.Context, dirs []string, scratch, dst string) error {
	src := dirs[0]
	if len(dirs) > 1 {
		mnt, err := os.MkdirTemp(scratch, ".merge-")
		if err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		defer os.Remove(mnt)
		// Without upperdir an overlay is read-only; it needs 2+ lowers.
		data := "lowerdir=" + strings.Join(dirs, ":")
		if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, data); err != nil {
			return fmt.Errorf("rootfs: mount overlay: %w", os.NewSyscallError("mount", err))
		}
		defer unix.Unmount(mnt, unix.MNT_DETACH)
		src = mnt
	}
	if err := diskimage.Create(ctx, src, dst, diskimage.Options{Mkfs: c.Mkfs, Label: "rootfs"}); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	return nil
}

// Cleanup removes an owned drive.
func Cleanup(d Drive) error {
	if !d.Owned || d.Path == "" {
		return nil
	}
	if err := os.Remove(d.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// CopySparse copies src to dst (created or truncated), skipping holes, so
// that a mostly empty image costs only its data.
func CopySparse(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
		} else {
			err = os.Rename(tmp, dst)
		}
	}()
	size := st.Size()
	if err := out.Truncate(size); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	var off int64
	for off < size {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("rootfs: seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("rootfs: seek hole: %w", err)
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
		if _, err := io.CopyN(out, in, hole-data); err != nil {
			return fmt.Errorf("rootfs: copy: %w", err)
		}
		off = hole
	}
	return nil
}
