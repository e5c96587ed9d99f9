package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Kernel is an unpacked L1 kernel package in the cache.
type Kernel struct {
	// Package and Version name the Debian package, e.g.
	// linux-image-6.1.0-56-cloud-amd64 and 6.1.192-2.
	Package, Version string
	// Release is the kernel release (uname -r), e.g. 6.1.0-56-cloud-amd64.
	Release string
	// Dir is the unpacked package in the cache.
	Dir string
	// Image is the bootable kernel (vmlinuz).
	Image string
	// ModulesDir is lib/modules/<Release> inside Dir.
	ModulesDir string
}

// PrepareKernel resolves meta (a Debian meta-package such as
// linux-image-cloud-amd64) to the versioned kernel package apt would
// install, and returns it unpacked from cacheDir, downloading it with
// apt-get and unpacking it with dpkg -x on first use. Concurrent callers,
// in this or other processes, share the work through a lock.
//
// If apt cannot resolve the package (for example, no package lists), the
// kernel that meta last resolved to, if cached, is used with a warning.
func PrepareKernel(ctx context.Context, cacheDir, meta string) (*Kernel, error) {
	kdir := filepath.Join(cacheDir, "kernel")
	// current records which package meta resolved to last time, for
	// hosts that lose their apt lists.
	current := filepath.Join(kdir, meta+".current")
	// Asking apt costs seconds; its answer only changes when the package
	// lists do.
	if fresh(current, aptListsDir) {
		if name, err := os.ReadFile(current); err == nil {
			if k, err := loadKernel(filepath.Join(kdir, strings.TrimSpace(string(name)))); err == nil {
				return k, nil
			}
		}
	}
	pkg, version, err := resolveKernelPackage(ctx, meta)
	if err != nil {
		if name, rerr := os.ReadFile(current); rerr == nil {
			if k, kerr := loadKernel(filepath.Join(kdir, strings.TrimSpace(string(name)))); kerr == nil {
				slog.Warn("lab: apt could not resolve the kernel package; using the cached one", "kernel", k.Package+"_"+k.Version, "err", err)
				return k, nil
			}
		}
		return nil, err
	}
	dir := filepath.Join(kdir, pkg+"_"+version)
	defer func() {
		if exists(dir) {
			_ = writeFileAtomic(current, []byte(pkg+"_"+version+"\n"))
		}
	}()
	if !exists(dir) {
		unlock, err := lockCache(cacheDir)
		if err != nil {
			return nil, err
		}
		defer unlock()
		if !exists(dir) {
			if err := downloadKernel(ctx, kdir, dir, pkg, version); err != nil {
				return nil, err
			}
		}
	}
	return loadKernel(dir)
}

// aptListsDir holds apt's package lists; "apt-get update" changes its
// modification time.
const aptListsDir = "/var/lib/apt/lists"

// fresh reports whether file exists and is newer than dep.
func fresh(file, dep string) bool {
	fi, err := os.Stat(file)
	if err != nil {
		return false
	}
	di, err := os.Stat(dep)
	return err == nil && fi.ModTime().After(di.ModTime())
}

// resolveKernelPackage asks apt which versioned package meta depends on and
// its candidate version.
func resolveKernelPackage(ctx context.Context, meta string) (pkg, version string, err error) {
	out, err := aptCache(ctx, "depends", meta)
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
			break
		}
	}
	if pkg == "" {
		return "", "", fmt.Errorf("%w: %s depends on no linux-image package", ErrKernelPackage, meta)
	}
	out, err = aptCache(ctx, "show", "--no-all-versions", pkg)
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "Version: "); ok {
			return pkg, strings.TrimSpace(v), nil
		}
	}
	return "", "", fmt.Errorf("%w: apt-cache show %s gave no version", ErrKernelPackage, pkg)
}

func aptCache(ctx context.Context, args ...string) (string, error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", fmt.Errorf("%w: apt-cache not found; the lab needs a Debian-based host: %w", ErrKernelPackage, err)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "apt-cache", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || len(bytes.TrimSpace(out)) == 0 {
		return "", fmt.Errorf("%w: apt-cache %s failed (are the package lists there? run 'apt-get update'): %v: %s",
			ErrKernelPackage, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// downloadKernel fetches pkg=version and unpacks it into final, via a
// temporary directory under kdir. The caller holds the cache lock.
func downloadKernel(ctx context.Context, kdir, final, pkg, version string) error {
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return fmt.Errorf("lab: cache: %w", err)
	}
	tmp, err := os.MkdirTemp(kdir, ".download-")
	if err != nil {
		return fmt.Errorf("lab: cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt drops privileges to _apt when it can; let it write here.
	_ = os.Chmod(tmp, 0o777)
	slog.Info("lab: downloading L1 kernel", "package", pkg, "version", version)
	dl := exec.CommandContext(ctx, "apt-get", "download", pkg+"="+version)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: apt-get download %s=%s: %v: %s", ErrKernelPackage, pkg, version, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("%w: apt-get download left %d .deb files", ErrKernelPackage, len(debs))
	}
	tree := filepath.Join(tmp, "tree")
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", debs[0], tree).CombinedOutput(); err != nil {
		return fmt.Errorf("%w: dpkg -x: %v: %s", ErrKernelPackage, err, bytes.TrimSpace(out))
	}
	// Documentation is not needed; keep boot/ and lib/.
	_ = os.RemoveAll(filepath.Join(tree, "usr", "share"))
	if _, err := loadKernel(tree); err != nil {
		return err
	}
	return publish(tree, final)
}

// loadKernel describes the unpacked package in dir.
func loadKernel(dir string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("%w: %s holds %d kernel images", ErrKernelPackage, dir, len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	k := &Kernel{
		Dir:        dir,
		Image:      images[0],
		Release:    release,
		ModulesDir: filepath.Join(dir, "lib", "modules", release),
	}
	if !exists(k.ModulesDir) {
		return nil, fmt.Errorf("%w: %s has no modules", ErrKernelPackage, dir)
	}
	k.Package, k.Version, _ = strings.Cut(filepath.Base(dir), "_")
	return k, nil
}

// builtinModules returns the names of modules built into the kernel.
func (k *Kernel) builtinModules() map[string]bool {
	m := map[string]bool{}
	f, err := os.Open(filepath.Join(k.ModulesDir, "modules.builtin"))
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m[moduleName(sc.Text())] = true
	}
	return m
}
