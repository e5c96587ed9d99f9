package lab

import (
	"debug/elf"
	"fmt"
)

// CheckStatic returns an error wrapping ErrNotStatic if the ELF executable
// at path needs a dynamic loader. The ember binary must be static: it is
// L1's init. Other files may be dynamic; Run copies their libraries (see
// SharedLibraries).
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
