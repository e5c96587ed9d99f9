package boot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/embervm/ember/vmm/arch/x86"
)

// ErrConfig reports an invalid boot configuration.
var ErrConfig = errors.New("boot: invalid configuration")

// Config describes a Linux VM to boot.
type Config struct {
	// Kernel is a vmlinux (ELF) or bzImage file.
	Kernel string `json:"kernel"`
	// Initrd is an optional initramfs.
	Initrd string `json:"initrd,omitempty"`
	// Cmdline is appended to DefaultCmdline.
	Cmdline string `json:"cmdline,omitempty"`
	// MemoryMiB is the guest RAM size.
	MemoryMiB uint64 `json:"memory_mib"`
	// VCPUs is the number of vCPUs.
	VCPUs int `json:"vcpus"`
	// CPUTemplate names an x86 CPU template ("", "none", "portable",
	// "emulation-safe").
	CPUTemplate string `json:"cpu_template,omitempty"`
	// Console receives the guest's serial output (nil discards it).
	Console io.Writer `json:"-"`
	// DirtyLog turns on dirty-page logging (for diff snapshots).
	DirtyLog bool `json:"dirty_log,omitempty"`
	// Drives are virtio-blk disks, in order (vda, vdb, ...).
	Drives []Drive `json:"drives,omitempty"`
	// SpareDrives adds this many empty virtio-blk slots after Drives
	// (at most MaxSpareDrives), whose images are attached at run time
	// (VM.AttachDrive, PUT /drives/{slot}); the guest sees them as disks of
	// size 0 with serials SpareDriveID(0), SpareDriveID(1), ...
	SpareDrives int `json:"spare_drives,omitempty"`
	// Nets are virtio-net interfaces, each on a new TAP device.
	Nets []NetInterface `json:"nets,omitempty"`
	// RNG adds a virtio entropy device.
	RNG bool `json:"rng,omitempty"`
	// Vsock adds a virtio-vsock device.
	Vsock *Vsock `json:"vsock,omitempty"`
	// OnMark is called for each boot-time marker the guest writes.
	OnMark func(code uint8, sinceStart time.Duration) `json:"-"`
}

// DefaultCmdline is what every ember guest kernel gets: the serial
// console, reboot through the i8042 (which the VMM turns into a clean
// stop), a quick panic exit, and a quiet boot: every console byte is a
// port-I/O exit, and the kernel's boot chatter costs more than the boot
// itself where exits are slow (add "loglevel=7" to see it).
const DefaultCmdline = "console=ttyS0 reboot=k panic=1 quiet i8042.noaux i8042.nomux i8042.dumbkbd tsc=reliable"

func (c *Config) validate() error {
	switch {
	case c.Kernel == "":
		return fmt.Errorf("%w: no kernel", ErrConfig)
	case c.VCPUs < 1 || c.VCPUs > 32:
		return fmt.Errorf("%w: %d vCPUs (1-32)", ErrConfig, c.VCPUs)
	case c.MemoryMiB<<20 < x86.MinMemory:
		return fmt.Errorf("%w: %d MiB of memory (at least %d MiB)", ErrConfig, c.MemoryMiB, x86.MinMemory>>20)
	case c.SpareDrives < 0 || c.SpareDrives > MaxSpareDrives:
		return fmt.Errorf("%w: %d spare drives (0-%d)", ErrConfig, c.SpareDrives, MaxSpareDrives)
	}
	for i, d := range c.Drives {
		if d.Path == "" {
			return fmt.Errorf("%w: drive %d has no path (use spare_drives for empty slots)", ErrConfig, i)
		}
	}
	if _, err := x86.ParseTemplate(c.CPUTemplate); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// Vsock is a virtio-vsock device whose host side is a Unix socket:
// host-initiated connections send "CONNECT <port>\n" on UDS; guest
// connections to host port P go to UDS_P (Firecracker's convention).
type Vsock struct {
	GuestCID uint64 `json:"guest_cid"`
	UDS      string `json:"uds"`
}

// ReadConfig reads a Config from a JSON file, refusing unknown fields (a
// misspelt field would otherwise be silently ignored).
func ReadConfig(path string) (Config, error) {
	var cfg Config
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}
