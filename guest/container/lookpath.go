package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// defaultPath is used when the process's environment has no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// errNotExecutable: the file exists but has no execute bit or is not a
// regular file.
var errNotExecutable = errors.New("not an executable file")

// lookPath finds file the way execvp does, in the current root, with the
// process's (not the agent's) PATH. Relative paths with a slash are taken
// from cwd.
func lookPath(file string, env []string, cwd string) (string, error) {
	if file == "" {
		return "", fmt.Errorf("empty args[0]: %w", ErrInvalidSpec)
	}
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("exec %q: %w", file, err)
		}
		return p, nil
	}
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var firstErr error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if firstErr == nil && !errors.Is(err, os.ErrNotExist) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return "", fmt.Errorf("exec %q: %w", file, firstErr)
	}
	return "", fmt.Errorf("exec %q: executable file not found in $PATH (%s): %w", file, path, os.ErrNotExist)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s: %w", p, errNotExecutable)
	}
	return nil
}
