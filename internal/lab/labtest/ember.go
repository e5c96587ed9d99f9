package labtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/lab"
)

// EmberEnv names an environment variable holding the path of a prebuilt
// static ember binary; when set, BuildEmber uses it instead of building.
const EmberEnv = "EMBER_LAB_EMBER"

// EmberPackage is the import path of the ember command.
const EmberPackage = "github.com/embervm/ember/cmd/ember"

// BuildEmber returns a static ember binary for L1: the file named by
// $EMBER_LAB_EMBER, or one built with "go build" (CGO_ENABLED=0) into dir.
// It needs the go command, which "go test" puts first on PATH.
func BuildEmber(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv(EmberEnv); p != "" {
		if err := lab.CheckStatic(p); err != nil {
			return "", fmt.Errorf("labtest: $%s: %w", EmberEnv, err)
		}
		return p, nil
	}
	out := filepath.Join(dir, "ember")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, EmberPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("labtest: go build %s: %w\n%s", EmberPackage, err, stderr.Bytes())
	}
	if err := lab.CheckStatic(out); err != nil {
		return "", fmt.Errorf("labtest: %w", err)
	}
	return out, nil
}

// Ember returns the path of a static ember binary for L1 that leaves nothing
// behind: $EMBER_LAB_EMBER if set, otherwise one built into a temporary
// directory, moved into an anonymous in-memory file and named by its
// /proc/self/fd path, so that a killed test process leaks no files. Call
// release when done with it.
func Ember(ctx context.Context) (path string, release func(), err error) {
	if p := os.Getenv(EmberEnv); p != "" {
		p, err := BuildEmber(ctx, "")
		return p, func() {}, err
	}
	dir, err := os.MkdirTemp("", "ember-labtest-")
	if err != nil {
		return "", nil, fmt.Errorf("labtest: %w", err)
	}
	defer os.RemoveAll(dir)
	built, err := BuildEmber(ctx, dir)
	if err != nil {
		return "", nil, err
	}
	f, err := memfdCopy(built)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("/proc/self/fd/%d", f.Fd()), func() { f.Close() }, nil
}

// memfdCopy returns an in-memory file holding a copy of the file at path.
func memfdCopy(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("labtest: %w", err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate(filepath.Base(path), unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("labtest: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("labtest: %w", err)
	}
	return f, nil
}
