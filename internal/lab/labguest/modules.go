package labguest

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// loadModules inserts the kernel modules at paths, in order. A module that
// is already loaded is not an error.
func loadModules(paths []string) error {
	for _, p := range paths {
		if err := loadModule(p); err != nil {
			return err
		}
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("labguest: module: %w", err)
	}
	defer f.Close()
	for {
		err = unix.FinitModule(int(f.Fd()), "", 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("labguest: load module %s: %w", path, err)
	}
	return nil
}
