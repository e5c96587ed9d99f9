package lab

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/embervm/ember/internal/cpio"
	"github.com/embervm/ember/internal/lab/labproto"
)

// imageFormat versions the base image layout; bump it when baseImage
// changes what it writes, so stale cached images are not reused.
const imageFormat = "1"

// baseDirs are the directories of L1's root file system.
var baseDirs = []string{"bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "root", "run", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin", "var", "ember-lab"}

// baseImage returns the path of the cached base initramfs archive for
// kernel k, holding busybox (with its applet links) and mods. It is built on
// first use. The archive has no trailer-terminated payload yet: Run appends
// a second archive for each run.
func baseImage(ctx context.Context, cacheDir string, k *Kernel, busybox string, mods []module) (string, error) {
	bbHash, err := fileHash(busybox)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrBusyboxMissing, err)
	}
	if err := CheckStatic(busybox); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBusyboxMissing, err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "format %s\nkernel %s\nbusybox %s\n", imageFormat, k.Dir, bbHash)
	for _, m := range mods {
		fmt.Fprintf(h, "module %s\n", m.rel)
	}
	dir := filepath.Join(cacheDir, "initramfs")
	final := filepath.Join(dir, hex.EncodeToString(h.Sum(nil))[:24]+".cpio")
	if exists(final) {
		return final, nil
	}
	unlock, err := lockCache(cacheDir)
	if err != nil {
		return "", err
	}
	defer unlock()
	if exists(final) {
		return final, nil
	}
	applets, err := busyboxApplets(ctx, busybox)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("lab: cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".build-")
	if err != nil {
		return "", fmt.Errorf("lab: cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := writeBase(bw, k, busybox, applets, mods); err != nil {
		tmp.Close()
		return "", err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("lab: cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("lab: cache: %w", err)
	}
	return final, publish(tmp.Name(), final)
}

func writeBase(w io.Writer, k *Kernel, busybox string, applets []string, mods []module) error {
	cw := cpio.NewWriter(w)
	mkdirs := newDirSet(cw)
	for _, d := range baseDirs {
		if err := mkdirs.add(d); err != nil {
			return err
		}
	}
	if err := copyInto(cw, busybox, "/bin/busybox", 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "busybox" || a == "init" || a == "linuxrc" || a == "ember" {
			continue
		}
		if err := cw.Symlink("bin/"+a, "busybox"); err != nil {
			return err
		}
	}
	for _, m := range mods {
		gp := path.Join("/lib/modules", k.Release, filepath.ToSlash(m.rel))
		if err := mkdirs.add(path.Dir(gp)); err != nil {
			return err
		}
		if err := copyInto(cw, filepath.Join(k.ModulesDir, m.rel), gp, 0o644); err != nil {
			return err
		}
	}
	return cw.Close()
}

// writePayload writes the per-run archive: the agent, the spec and the
// caller's files.
func writePayload(w io.Writer, cfg *Config, spec *labproto.Spec) error {
	cw := cpio.NewWriter(w)
	mkdirs := newDirSet(cw)
	for _, d := range baseDirs { // present in the base archive
		mkdirs.done[d] = true
	}
	if err := copyInto(cw, cfg.Ember, GuestEmber, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("lab: spec: %w", err)
	}
	if err := cw.WriteFile(labproto.SpecPath, 0o644, b); err != nil {
		return err
	}
	for _, f := range cfg.Files {
		gp := path.Clean(f.GuestPath)
		if err := mkdirs.add(path.Dir(gp)); err != nil {
			return err
		}
		if err := copyInto(cw, f.HostPath, gp, f.Mode); err != nil {
			return err
		}
	}
	return cw.Close()
}

// dirSet writes each directory (and its parents) once.
type dirSet struct {
	cw   *cpio.Writer
	done map[string]bool
}

func newDirSet(cw *cpio.Writer) *dirSet { return &dirSet{cw: cw, done: map[string]bool{}} }

func (s *dirSet) add(dir string) error {
	dir = strings.Trim(path.Clean("/"+dir), "/")
	if dir == "" || s.done[dir] {
		return nil
	}
	if err := s.add(path.Dir(dir)); err != nil {
		return err
	}
	s.done[dir] = true
	return s.cw.Mkdir(dir, 0o755)
}

// copyInto adds the host file src to the archive as dst. A zero mode takes
// the host file's permission bits.
func copyInto(cw *cpio.Writer, src, dst string, mode os.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrConfig, src)
	}
	if mode == 0 {
		mode = fi.Mode().Perm()
	}
	if err := cw.WriteFileFrom(dst, mode, fi.Size(), f); err != nil {
		return fmt.Errorf("lab: add %s: %w", src, err)
	}
	return nil
}

// busyboxApplets lists the applets busybox provides.
func busyboxApplets(ctx context.Context, busybox string) ([]string, error) {
	out, err := exec.CommandContext(ctx, busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s --list: %w", ErrBusyboxMissing, busybox, err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)
	return applets, nil
}

func fileHash(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
