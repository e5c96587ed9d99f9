package lab

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
)

// libDirs are searched, in order, for the shared libraries a dynamically
// linked executable needs (Debian's multiarch layout first).
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// ErrSharedLib means a shared library a file needs was not found on the
// host.
var ErrSharedLib = errors.New("lab: shared library not found")

// SharedLibraries returns the files a dynamically linked ELF executable
// needs in L1, which has no C library of its own: its program interpreter
// and the shared libraries it needs, transitively, each at its host path.
// For a static executable, or a file that is not ELF, it returns nil.
func SharedLibraries(file string) ([]File, error) {
	if elfFile, err := isELF(file); err != nil || !elfFile {
		return nil, err
	}
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("lab: %s: %w", file, err)
	}
	defer f.Close()
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return nil, fmt.Errorf("lab: %s: interpreter: %w", file, err)
			}
			interp = string(b[:max(0, len(b)-1)]) // NUL-terminated
		}
	}
	if interp == "" {
		return nil, nil
	}
	files := []File{{HostPath: interp, GuestPath: interp}}
	seen := map[string]bool{interp: true}
	var walk func(f *elf.File, who string) error
	walk = func(f *elf.File, who string) error {
		needed, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("lab: %s: %w", who, err)
		}
		for _, name := range needed {
			p := findLib(name)
			if p == "" {
				return fmt.Errorf("%w: %s (needed by %s)", ErrSharedLib, name, who)
			}
			if seen[p] {
				continue
			}
			seen[p] = true
			files = append(files, File{HostPath: p, GuestPath: p})
			lf, err := elf.Open(p)
			if err != nil {
				return fmt.Errorf("lab: %s: %w", p, err)
			}
			err = walk(lf, p)
			lf.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(f, file); err != nil {
		return nil, err
	}
	return files, nil
}

func findLib(name string) string {
	if path.IsAbs(name) {
		return name
	}
	for _, d := range libDirs {
		p := path.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// isELF reports whether file starts with the ELF magic number.
func isELF(file string) (bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return false, fmt.Errorf("lab: %w", err)
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		return false, nil // shorter than an ELF header
	}
	return string(magic[:]) == elf.ELFMAG, nil
}
