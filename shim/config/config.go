// Package config reads the ember shim's configuration: a TOML file
// (/etc/ember/config.toml by default) with per-container overrides from OCI
// annotations (ember.vm.memory_mib, ember.vm.vcpus).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DefaultPath is where the shim looks for its configuration.
const DefaultPath = "/etc/ember/config.toml"

// PathEnv overrides DefaultPath (tests, side-by-side installs).
const PathEnv = "EMBER_SHIM_CONFIG"

// Annotations that override the VM size per container (the first container
// of a pod decides for the pod's VM).
const (
	AnnotationMemoryMiB = "ember.vm.memory_mib"
	AnnotationVCPUs     = "ember.vm.vcpus"
)

// Backends: where a VM comes from.
const (
	// BackendAuto tries a pool claim (if PoolSocket is set), then a restore
	// (if SnapshotProfile is set), then a cold boot.
	BackendAuto = "auto"
	// BackendBoot always cold boots.
	BackendBoot = "boot"
	// BackendPool only claims from the pool.
	BackendPool = "pool"
	// BackendRestore only restores from SnapshotProfile.
	BackendRestore = "restore"
)

// ErrInvalid reports an invalid configuration or annotation.
var ErrInvalid = errors.New("shim config: invalid")

// Limits on the VM size.
const (
	MinMemoryMiB = 64
	MaxMemoryMiB = 1 << 20
	MaxVCPUs     = 32
	// MaxSpareDrives is vmm/boot's limit (boot.MaxSpareDrives).
	MaxSpareDrives = 8
	// DefaultSpareDrives slots let a pod run that many containers beside
	// its first.
	DefaultSpareDrives = 4
)

// Config is the shim's configuration.
type Config struct {
	// Ember is the ember binary that runs VMM processes (ember vmm).
	Ember string `toml:"ember"`
	// Kernel is the guest kernel (vmlinux or bzImage).
	Kernel string `toml:"kernel"`
	// Initrd is the guest initramfs whose /init is ember-agent.
	Initrd string `toml:"initrd"`
	// KernelArgs are appended to the VMM's default command line.
	KernelArgs string `toml:"kernel_args"`
	// MemoryMiB and VCPUs size each VM unless annotations override them.
	MemoryMiB uint64 `toml:"memory_mib"`
	VCPUs     int    `toml:"vcpus"`
	// Backend is one of auto, boot, pool, restore.
	Backend string `toml:"backend"`
	// PoolSocket is the warm pool's API socket ("" = no pool).
	PoolSocket string `toml:"pool_socket"`
	// PoolProfile is the profile claimed from the pool.
	PoolProfile string `toml:"pool_profile"`
	// SnapshotProfile is a snapshot profile directory to restore from.
	SnapshotProfile string `toml:"snapshot_profile"`
	// StateDir holds one directory per VM (sockets, console, disks).
	StateDir string `toml:"state_dir"`
	// CacheDir holds the rootfs image cache.
	CacheDir string `toml:"cache_dir"`
	// AgentTimeout bounds the wait for the guest agent after boot.
	AgentTimeout Duration `toml:"agent_timeout"`
	// KeepConsole keeps the guest console log after the VM is gone (in
	// CacheDir/../console), for debugging.
	KeepConsole bool `toml:"keep_console"`
	// SpareDrives is how many spare drive slots a cold-booted VM gets
	// (0-MaxSpareDrives): each later container of the pod attaches its
	// rootfs to one. A snapshot profile has the slots it was created with.
	SpareDrives int `toml:"spare_drives"`
}

// Duration is a time.Duration written as "30s" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Default returns the configuration used for absent fields.
func Default() Config {
	return Config{
		Ember:        "/usr/local/bin/ember",
		Kernel:       "/var/lib/ember/vmlinux",
		Initrd:       "/var/lib/ember/agent.cpio",
		MemoryMiB:    256,
		VCPUs:        1,
		Backend:      BackendAuto,
		PoolProfile:  "default",
		StateDir:     "/run/ember",
		CacheDir:     "/var/lib/ember/rootfs",
		AgentTimeout: Duration(2 * time.Minute),
		SpareDrives:  DefaultSpareDrives,
	}
}

// Path returns the configuration file to read: $EMBER_SHIM_CONFIG, else
// DefaultPath.
func Path() string {
	if p := os.Getenv(PathEnv); p != "" {
		return p
	}
	return DefaultPath
}

// Load reads the file at path over the defaults. A missing file at the
// default path yields the defaults; a missing file named explicitly is an
// error.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && path == DefaultPath {
		c := Default()
		return c, c.Validate()
	}
	if err != nil {
		return Config{}, fmt.Errorf("shim config: %w", err)
	}
	return Parse(b)
}

// Parse decodes TOML over the defaults; unknown keys are errors (a typo
// must not silently fall back to a default).
func Parse(b []byte) (Config, error) {
	c := Default()
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return c, c.Validate()
}

// Validate checks ranges and required fields.
func (c *Config) Validate() error {
	switch {
	case c.Ember == "" || c.Kernel == "" || c.Initrd == "":
		return fmt.Errorf("%w: ember, kernel and initrd must be set", ErrInvalid)
	case c.MemoryMiB < MinMemoryMiB || c.MemoryMiB > MaxMemoryMiB:
		return fmt.Errorf("%w: memory_mib %d (want %d-%d)", ErrInvalid, c.MemoryMiB, MinMemoryMiB, MaxMemoryMiB)
	case c.VCPUs < 1 || c.VCPUs > MaxVCPUs:
		return fmt.Errorf("%w: vcpus %d (want 1-%d)", ErrInvalid, c.VCPUs, MaxVCPUs)
	case c.StateDir == "" || c.CacheDir == "":
		return fmt.Errorf("%w: state_dir and cache_dir must be set", ErrInvalid)
	case c.AgentTimeout <= 0:
		return fmt.Errorf("%w: agent_timeout must be positive", ErrInvalid)
	case c.SpareDrives < 0 || c.SpareDrives > MaxSpareDrives:
		return fmt.Errorf("%w: spare_drives %d (want 0-%d)", ErrInvalid, c.SpareDrives, MaxSpareDrives)
	}
	switch c.Backend {
	case BackendAuto, BackendBoot:
	case BackendPool:
		if c.PoolSocket == "" {
			return fmt.Errorf("%w: backend pool needs pool_socket", ErrInvalid)
		}
	case BackendRestore:
		if c.SnapshotProfile == "" {
			return fmt.Errorf("%w: backend restore needs snapshot_profile", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: backend %q (want auto, boot, pool or restore)", ErrInvalid, c.Backend)
	}
	return nil
}

// WithAnnotations returns c with the VM size overridden by the OCI
// annotations ember.vm.memory_mib and ember.vm.vcpus.
func (c Config) WithAnnotations(ann map[string]string) (Config, error) {
	if v, ok := ann[AnnotationMemoryMiB]; ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return c, fmt.Errorf("%w: annotation %s=%q: %w", ErrInvalid, AnnotationMemoryMiB, v, err)
		}
		c.MemoryMiB = n
	}
	if v, ok := ann[AnnotationVCPUs]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return c, fmt.Errorf("%w: annotation %s=%q: %w", ErrInvalid, AnnotationVCPUs, v, err)
		}
		c.VCPUs = n
	}
	return c, c.Validate()
}
