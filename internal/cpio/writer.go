// Package cpio writes cpio archives in the "newc" (SVR4, no CRC) format, the
// format the Linux kernel unpacks as an initramfs.
//
// The writer is deliberately small: regular files, directories and symbolic
// links, with owner root and modification time zero so that equal inputs give
// byte-identical archives. Several archives may be concatenated; the kernel
// unpacks them in order, later entries replacing earlier ones.
package cpio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
)

// Unix file type bits as stored in a newc header's mode field.
const (
	typeDir     = 0o040000
	typeRegular = 0o100000
	typeSymlink = 0o120000
)

const (
	magic   = "070701"
	trailer = "TRAILER!!!"
	// headerLen is the length of a newc header: the magic and 13 fields of
	// eight hexadecimal digits.
	headerLen = 6 + 13*8
)

// Sentinel errors returned by Writer methods.
var (
	// ErrClosed means the archive was already closed.
	ErrClosed = errors.New("cpio: write to closed archive")
	// ErrBadName means an entry name is empty, contains NUL or a ".."
	// element, or is the reserved trailer name.
	ErrBadName = errors.New("cpio: invalid entry name")
	// ErrShortData means a reader supplied fewer bytes than the declared
	// file size.
	ErrShortData = errors.New("cpio: file data shorter than its size")
)

// Writer writes a newc cpio archive to an underlying io.Writer. Entries are
// written in the order of the calls; a directory should be written before the
// entries inside it. Close must be called to write the trailer. A Writer is
// not safe for concurrent use.
type Writer struct {
	w      io.Writer
	ino    uint32
	closed bool
	err    error // first write error; sticky
}

// NewWriter returns a Writer that writes an archive to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: w, ino: 1}
}

// WriteFile adds a regular file with the given permission bits (the type bits
// of mode are ignored) and contents.
func (cw *Writer) WriteFile(name string, mode fs.FileMode, data []byte) error {
	return cw.WriteFileFrom(name, mode, int64(len(data)), bytes.NewReader(data))
}

// WriteFileFrom adds a regular file of size bytes read from r. It fails with
// ErrShortData if r ends early; bytes beyond size are not read.
func (cw *Writer) WriteFileFrom(name string, mode fs.FileMode, size int64, r io.Reader) error {
	if size < 0 || size > 0xffffffff {
		return fmt.Errorf("cpio: %s: size %d out of range for newc", name, size)
	}
	if err := cw.header(name, typeRegular|uint32(mode.Perm()), uint32(size)); err != nil {
		return err
	}
	n, err := io.CopyN(cw.w, r, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: %s: got %d of %d bytes", ErrShortData, name, n, size)
		} else {
			err = fmt.Errorf("cpio: %s: %w", name, err)
		}
		cw.err = err
		return err
	}
	return cw.pad(size)
}

// Mkdir adds a directory with the given permission bits.
func (cw *Writer) Mkdir(name string, mode fs.FileMode) error {
	return cw.header(name, typeDir|uint32(mode.Perm()), 0)
}

// Symlink adds a symbolic link name pointing to target.
func (cw *Writer) Symlink(name, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("%w: symlink %s has target %q", ErrBadName, name, target)
	}
	if err := cw.header(name, typeSymlink|0o777, uint32(len(target))); err != nil {
		return err
	}
	if err := cw.write([]byte(target)); err != nil {
		return err
	}
	return cw.pad(int64(len(target)))
}

// Close writes the archive trailer. It does not close the underlying writer.
// Closing twice returns ErrClosed.
func (cw *Writer) Close() error {
	if cw.closed {
		return ErrClosed
	}
	err := cw.entry(trailer, 0, 0)
	cw.closed = true
	return err
}

// header validates name and writes the header of one entry.
func (cw *Writer) header(name string, mode, size uint32) error {
	if cw.closed {
		return ErrClosed
	}
	clean, err := cleanName(name)
	if err != nil {
		return err
	}
	return cw.entry(clean, mode, size)
}

func (cw *Writer) entry(name string, mode, size uint32) error {
	nlink := uint32(1)
	if mode&0o170000 == typeDir {
		nlink = 2
	}
	ino := cw.ino
	if name == trailer {
		ino = 0
	}
	cw.ino++
	h := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		magic,
		ino, mode, 0, 0, nlink, 0, size, // ino, mode, uid, gid, nlink, mtime, filesize
		0, 0, 0, 0, // devmajor, devminor, rdevmajor, rdevminor
		len(name)+1, 0) // namesize (with NUL), check
	if err := cw.write([]byte(h + name + "\x00")); err != nil {
		return err
	}
	return cw.pad(int64(headerLen + len(name) + 1))
}

// pad writes the zero bytes that align the archive after n bytes of an item.
func (cw *Writer) pad(n int64) error {
	if r := n % 4; r != 0 {
		return cw.write(make([]byte, 4-r))
	}
	return nil
}

func (cw *Writer) write(b []byte) error {
	if cw.err != nil {
		return cw.err
	}
	if _, err := cw.w.Write(b); err != nil {
		cw.err = fmt.Errorf("cpio: %w", err)
		return cw.err
	}
	return nil
}

// cleanName strips leading slashes and "./" and rejects names the kernel
// would misplace or that collide with the trailer.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	for strings.HasPrefix(n, "./") {
		n = strings.TrimLeft(n[2:], "/")
	}
	n = strings.TrimRight(n, "/")
	if n == "" || n == "." || n == trailer || strings.IndexByte(n, 0) >= 0 {
		return "", fmt.Errorf("%w: %q", ErrBadName, name)
	}
	for _, el := range strings.Split(n, "/") {
		if el == ".." || el == "" {
			return "", fmt.Errorf("%w: %q", ErrBadName, name)
		}
	}
	return n, nil
}
