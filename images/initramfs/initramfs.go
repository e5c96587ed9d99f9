// Package initramfs builds a guest initramfs: a newc cpio archive (the
// format the kernel unpacks into its root file system), optionally gzip
// compressed, from host files and an /init program.
//
// Entries are written in path order after their parent directories, with
// owner root and zero timestamps (internal/cpio), so that equal inputs give
// byte-identical archives and cache keys stay stable.
package initramfs

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/embervm/ember/internal/cpio"
)

// Sentinel errors.
var (
	// ErrNoInit: the spec has no /init.
	ErrNoInit = errors.New("initramfs: no /init")
	// ErrPath: a guest path is empty, relative after cleaning to "..", or
	// given twice.
	ErrPath = errors.New("initramfs: invalid guest path")
	// ErrSource: a file has both or neither of Host and Data, or the host
	// file is not a regular file.
	ErrSource = errors.New("initramfs: invalid file source")
)

// File is one regular file of the initramfs.
type File struct {
	// Guest is the absolute path in the guest ("/bin/agent").
	Guest string
	// Host is the host file to copy; or Data holds the contents.
	Host string
	Data []byte
	// Mode holds the permission bits; 0 means 0644, or the host file's
	// permission bits when Host is set.
	Mode fs.FileMode
}

// Symlink is a symbolic link of the initramfs.
type Symlink struct {
	Guest  string
	Target string
}

// Spec describes an initramfs.
type Spec struct {
	// Init is the program run as PID 1; it is stored as /init, mode 0755.
	Init File
	// Files are further files; their parent directories are created.
	Files []File
	// Dirs are further (empty) directories, mode 0755.
	Dirs []string
	// Symlinks are symbolic links.
	Symlinks []Symlink
}

// StandardDirs are created in every initramfs: mount points the guest's
// init needs before anything else.
var StandardDirs = []string{"/dev", "/proc", "/sys", "/tmp", "/run", "/root"}

// entry is one archive member.
type entry struct {
	name string // without leading slash
	dir  bool
	link string
	file *File
}

// cleanGuest validates and normalizes a guest path to archive form.
func cleanGuest(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%w: %q is not absolute", ErrPath, p)
	}
	c := strings.TrimPrefix(path.Clean(p), "/")
	if c == "" || c == "." {
		return "", fmt.Errorf("%w: %q", ErrPath, p)
	}
	return c, nil
}

// plan turns spec into ordered entries.
func plan(spec Spec) ([]entry, error) {
	if spec.Init.Host == "" && spec.Init.Data == nil {
		return nil, ErrNoInit
	}
	init := spec.Init
	init.Guest = "/init"
	if init.Mode == 0 {
		init.Mode = 0o755
	}
	byName := map[string]entry{}
	add := func(e entry) error {
		if old, ok := byName[e.name]; ok {
			if old.dir && e.dir {
				return nil
			}
			return fmt.Errorf("%w: /%s given twice", ErrPath, e.name)
		}
		byName[e.name] = e
		// Parents.
		for d := path.Dir(e.name); d != "." && d != "/"; d = path.Dir(d) {
			if old, ok := byName[d]; ok {
				if !old.dir {
					return fmt.Errorf("%w: /%s is a file and a directory", ErrPath, d)
				}
				break
			}
			byName[d] = entry{name: d, dir: true}
		}
		return nil
	}
	for _, d := range append(append([]string(nil), StandardDirs...), spec.Dirs...) {
		n, err := cleanGuest(d)
		if err != nil {
			return nil, err
		}
		if err := add(entry{name: n, dir: true}); err != nil {
			return nil, err
		}
	}
	files := append([]File{init}, spec.Files...)
	for i := range files {
		f := &files[i]
		if (f.Host == "") == (f.Data == nil) {
			return nil, fmt.Errorf("%w: %s needs exactly one of Host and Data", ErrSource, f.Guest)
		}
		n, err := cleanGuest(f.Guest)
		if err != nil {
			return nil, err
		}
		if err := add(entry{name: n, file: f}); err != nil {
			return nil, err
		}
	}
	for _, l := range spec.Symlinks {
		n, err := cleanGuest(l.Guest)
		if err != nil {
			return nil, err
		}
		if err := add(entry{name: n, link: l.Target}); err != nil {
			return nil, err
		}
	}
	es := make([]entry, 0, len(byName))
	for _, e := range byName {
		es = append(es, e)
	}
	// Path order puts every directory before its contents.
	sort.Slice(es, func(i, j int) bool { return es[i].name < es[j].name })
	return es, nil
}

// Write writes the initramfs for spec to w, gzip-compressed if compress is
// set.
func Write(w io.Writer, spec Spec, compress bool) error {
	es, err := plan(spec)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var out io.Writer = bw
	var zw *gzip.Writer
	if compress {
		zw, _ = gzip.NewWriterLevel(bw, gzip.BestSpeed)
		out = zw
	}
	cw := cpio.NewWriter(out)
	for _, e := range es {
		switch {
		case e.dir:
			err = cw.Mkdir(e.name, 0o755)
		case e.link != "":
			err = cw.Symlink(e.name, e.link)
		default:
			err = writeFile(cw, e.name, e.file)
		}
		if err != nil {
			return fmt.Errorf("initramfs: /%s: %w", e.name, err)
		}
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("initramfs: gzip: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// writeFile adds one regular file.
func writeFile(cw *cpio.Writer, name string, f *File) error {
	if f.Data != nil {
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		return cw.WriteFile(name, mode, f.Data)
	}
	h, err := os.Open(f.Host)
	if err != nil {
		return err
	}
	defer h.Close()
	st, err := h.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrSource, f.Host)
	}
	mode := f.Mode
	if mode == 0 {
		mode = st.Mode().Perm()
	}
	return cw.WriteFileFrom(name, mode, st.Size(), h)
}

// WriteFile writes the initramfs to path atomically: a temporary file in
// the same directory, renamed over path once complete.
func WriteFile(dst string, spec Spec, compress bool) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp*")
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := Write(tmp, spec, compress); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}
