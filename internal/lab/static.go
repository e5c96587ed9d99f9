package lab

import (
	"debug/elf"
	"fmt"
)

// CheckStatic returns an error wrapping ErrNotStatic if the ELF executable
// at path needs a dynamic loader, which L1 does not have.
func CheckStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("lab: %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: %s", ErrNotStatic, path)
		}
	}
	return nil
}
