package snapshot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// writeAtomic creates dir/name with the content write produces, so that
// dir/name is either its old content or the complete new one even across a
// crash: write a temporary file in dir, fsync it, rename it over name, and
// fsync dir. On error the temporary file is removed and name is untouched.
func writeAtomic(dir, name string, write func(f *os.File) error) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("snapshot: fsync %s: %w", tmp, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("snapshot: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return syncDir(dir)
}

// syncDir makes the directory entries in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshot: fsync directory %s: %w", dir, err)
	}
	return nil
}

// removeStale deletes the memory files in dir other than keep, and
// temporary files a crashed save left behind.
func removeStale(dir, keep string) error {
	var errs []error
	for _, pat := range []string{"memory-*.raw", ".*.tmp-*"} {
		names, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, n := range names {
			if filepath.Base(n) == keep {
				continue
			}
			if err := os.Remove(n); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
