package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// errSymlinkLoop: too many symlinks while resolving a path in a rootfs.
var errSymlinkLoop = errors.New("too many levels of symbolic links")

// resolveInRoot resolves path as if root were "/": symlinks in the
// container image (even absolute ones, or ones with "..") can never lead
// outside root. Components that do not exist are kept as they are, so the
// result can be created. It returns a path under root.
func resolveInRoot(root, path string) (string, error) {
	const maxLinks = 255
	links := 0
	var done []string // resolved components, relative to root
	rest := strings.Split(filepath.Clean("/"+path), "/")
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		cur := filepath.Join(append([]string{root}, append(done, c)...)...)
		fi, err := os.Lstat(cur)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				done = append(done, c)
				continue
			}
			return "", fmt.Errorf("resolve %s: %w", path, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("resolve %s: %w", path, errSymlinkLoop)
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", path, err)
		}
		if filepath.IsAbs(target) {
			done = nil
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(append([]string{root}, done...)...), nil
}
