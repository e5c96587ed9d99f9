package lab

import (
	"fmt"
	"io"
	"io/fs"
	"path"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultMemoryMiB = 2048
	DefaultCPUs      = 1
	DefaultTimeout   = 10 * time.Minute
	// DefaultKernelPackage is the Debian meta-package naming L1's kernel.
	DefaultKernelPackage = "linux-image-cloud-amd64"
	// DefaultBusybox is where busybox-static installs its binary.
	DefaultBusybox = "/bin/busybox"
	// GuestEmber is where the ember binary (the agent) is placed in L1.
	GuestEmber = "/bin/ember"
)

// DefaultModules are the kernel modules loaded in L1, with their
// dependencies: KVM on AMD SVM, the agent's virtio-serial port, and what
// ember's VMM and its tests use. Modules marked optional in
// optionalModules are skipped when the kernel lacks them.
var DefaultModules = []string{
	"kvm_amd", "virtio_mmio", "virtio_console", "virtio_blk",
	"tun", "overlay", "loop", "vhost_vsock", "vhost_net",
}

// optionalModules may be absent from a kernel without failing the run.
var optionalModules = map[string]bool{"vhost_vsock": true, "vhost_net": true, "loop": true}

// File is a host file to copy into L1.
type File struct {
	// HostPath is the file on the host.
	HostPath string
	// GuestPath is its absolute path in L1; parent directories are
	// created.
	GuestPath string
	// Mode holds the permission bits in L1; zero means the host file's.
	Mode fs.FileMode
}

// Config describes one lab run.
type Config struct {
	// Args is the command run in L1 and its arguments (required). Args[0]
	// is looked up in PATH of Env, defaulting to /bin:/sbin:/usr/bin:/usr/sbin.
	Args []string
	// Env is added to L1's base environment (PATH, HOME, TERM and
	// EMBER_LAB_GUEST=1); entries here win.
	Env []string
	// Dir is the working directory in L1; default "/".
	Dir string
	// Files are copied into L1 before it boots.
	Files []File
	// Ember is a static ember binary placed in L1 as /bin/ember; it is
	// L1's init (the lab agent). Required.
	Ember string

	// Timeout bounds the whole run, boot included; default DefaultTimeout.
	Timeout time.Duration
	// FreezeTimeout: once the command runs, L1 silent this long (no
	// output, no heartbeat) counts as frozen (ErrFrozen); default
	// DefaultFreezeTimeout.
	FreezeTimeout time.Duration
	// MemoryMiB is L1's memory; default DefaultMemoryMiB.
	MemoryMiB int
	// CPUs is L1's vCPU count; default DefaultCPUs. More than one uses
	// multi-threaded TCG.
	CPUs int
	// Modules are kernel modules to load in addition to DefaultModules.
	Modules []string
	// KernelArgs are appended to L1's kernel command line.
	KernelArgs []string

	// Stdout and Stderr receive the command's output as it arrives; nil
	// discards it.
	Stdout, Stderr io.Writer
	// Console, if not nil, receives L1's kernel console as it arrives.
	Console io.Writer
	// ConsoleLog, if not empty, is a file that receives L1's whole kernel
	// console (created or truncated).
	ConsoleLog string

	// Cache overrides where kernels and images are cached; default
	// DefaultCacheDir().
	Cache string
	// KernelPackage overrides DefaultKernelPackage.
	KernelPackage string
	// Busybox overrides DefaultBusybox.
	Busybox string
	// QEMU overrides the emulator binary, looked up in PATH; default
	// qemu-system-x86_64.
	QEMU string
}

// Result is the outcome of a run whose command ran to completion.
type Result struct {
	// ExitCode is the command's exit status; 128+N if signal N killed it.
	ExitCode int
	// Console is the tail of L1's kernel console.
	Console string
	// Boot is the time from starting QEMU to the agent starting the
	// command.
	Boot time.Duration
	// GuestBoot is L1's own uptime when the agent started the command.
	GuestBoot time.Duration
	// Total is the time Run took, image building included.
	Total time.Duration
}

// validate checks the fields Run needs, returning an error wrapping
// ErrConfig.
func (c *Config) validate() error {
	if len(c.Args) == 0 {
		return fmt.Errorf("%w: no command", ErrConfig)
	}
	if c.Ember == "" {
		return fmt.Errorf("%w: no ember binary", ErrConfig)
	}
	return nil
}

// withDefaults returns a copy of c with zero fields defaulted, or an error
// wrapping ErrConfig.
func (c Config) withDefaults() (Config, error) {
	for _, f := range c.Files {
		if !path.IsAbs(f.GuestPath) || path.Clean(f.GuestPath) == "/" {
			return c, fmt.Errorf("%w: guest path %q is not an absolute file path", ErrConfig, f.GuestPath)
		}
	}
	if c.Dir == "" {
		c.Dir = "/"
	}
	if c.FreezeTimeout <= 0 {
		c.FreezeTimeout = DefaultFreezeTimeout
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MemoryMiB <= 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.CPUs <= 0 {
		c.CPUs = DefaultCPUs
	}
	if c.Stdout == nil {
		c.Stdout = io.Discard
	}
	if c.Stderr == nil {
		c.Stderr = io.Discard
	}
	if c.KernelPackage == "" {
		c.KernelPackage = DefaultKernelPackage
	}
	if c.Busybox == "" {
		c.Busybox = DefaultBusybox
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.Cache == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return c, err
		}
		c.Cache = d
	}
	return c, nil
}
