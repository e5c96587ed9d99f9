package boot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/arch/x86"
	"github.com/embervm/ember/vmm/devices/serial"
	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	vnet "github.com/embervm/ember/vmm/devices/virtio/net"
	"github.com/embervm/ember/vmm/devices/virtio/rng"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
)

// Device blob names and versions in a Linux snapshot's DEVS section. Every
// blob is JSON; a restore refuses a version it does not know.
const (
	// MachineBlob holds the machine description (PersistedMachine).
	MachineBlob = "boot.machine"
	// SerialBlob holds the COM1 UART's registers and receive FIFO.
	SerialBlob = "serial.com1"
	// VirtioBlobPrefix + slot number holds one virtio-mmio device
	// (PersistedVirtio): its transport and its model's state.
	VirtioBlobPrefix = "virtio."
	// BlobVersion is the version of every blob above.
	BlobVersion = 1
)

// ErrSnapshot reports a VM that cannot be snapshotted as asked, or a
// snapshot that is not a Linux (vmm/boot) snapshot or does not fit.
var ErrSnapshot = errors.New("boot: snapshot")

// ErrDiffWithVirtio: diff snapshots are refused for VMs with virtio
// devices. The devices write guest memory from the VMM (used rings, data
// read from disk, received frames, vsock packets), which KVM's dirty log
// does not see, so a diff would silently miss those pages.
var ErrDiffWithVirtio = errors.New("boot: diff snapshots of VMs with virtio devices are not supported (device writes to guest memory are not dirty-logged); take a full snapshot")

// PersistedMachine is what a restore needs to rebuild the machine without
// a kernel: the memory size, vCPUs and device list as built. The kernel,
// initrd and command line are kept for reference only.
type PersistedMachine struct {
	MemoryMiB   uint64 `json:"memory_mib"`
	VCPUs       int    `json:"vcpus"`
	CPUTemplate string `json:"cpu_template,omitempty"`
	DirtyLog    bool   `json:"dirty_log,omitempty"`
	Kernel      string `json:"kernel"`
	Initrd      string `json:"initrd,omitempty"`
	// Cmdline is the full kernel command line the guest booted with.
	Cmdline string `json:"cmdline"`
	// Devices lists the virtio devices in slot order.
	Devices []PersistedSlot `json:"devices"`
}

// PersistedSlot places one virtio-mmio device.
type PersistedSlot struct {
	Slot int    `json:"slot"`
	Kind string `json:"kind"` // block, net, vsock, rng
	Base uint64 `json:"base"`
	GSI  uint32 `json:"gsi"`
}

// PersistedVirtio is one virtio device's blob: the transport's registers
// and queues, and the device model's state (one of the pointers is set,
// as Kind says).
type PersistedVirtio struct {
	Kind      string          `json:"kind"`
	Transport mmio.State      `json:"transport"`
	Block     *block.State    `json:"block,omitempty"`
	Net       *PersistedNet   `json:"net,omitempty"`
	RNG       *rng.State      `json:"rng,omitempty"`
	Vsock     *PersistedVsock `json:"vsock,omitempty"`
}

// PersistedNet is a net device's state plus its TAP's host address.
type PersistedNet struct {
	State    vnet.State   `json:"state"`
	HostAddr netip.Prefix `json:"host_addr,omitzero"`
}

// PersistedVsock is a vsock device's state (its binary encoding,
// vsock.StateVersion) and the Unix socket it listened on.
type PersistedVsock struct {
	State []byte `json:"state"`
	UDS   string `json:"uds"`
}

// SnapshotOptions tune VM.Snapshot.
type SnapshotOptions struct {
	// Diff writes only the pages written since the previous snapshot; it
	// needs Config.DirtyLog and is refused (ErrDiffWithVirtio) for a VM
	// with virtio devices.
	Diff   bool
	Parent snapshot.ID
	Logger *slog.Logger
}

// Snapshot writes a snapshot of the VM, whose vCPUs must be paused
// (vmm.Machine.Pause), into dir: KVM state, memory, and in DEVS the
// machine description, the serial port and every virtio device with its
// transport. The virtio transports are paused for the save (the devices
// stop touching guest memory) and resumed afterwards; the vCPUs stay
// paused.
func (v *VM) Snapshot(ctx context.Context, dir string, opts SnapshotOptions) (*snapshot.State, *snapshot.SaveStats, error) {
	for _, c := range v.VCPUs() {
		if c.State() == vmm.VCPURunning {
			return nil, nil, fmt.Errorf("%w: vCPU %d is running; pause the VM first", ErrSnapshot, c.ID())
		}
	}
	if opts.Diff && len(v.devices) > 0 {
		return nil, nil, ErrDiffWithVirtio
	}
	v.driveMu.Lock()
	defer v.driveMu.Unlock()
	for _, a := range v.devices {
		a.tr.Pause()
	}
	defer func() {
		for _, a := range v.devices {
			a.tr.Resume()
		}
	}()
	devs, err := v.deviceStates()
	if err != nil {
		return nil, nil, err
	}
	return snapshot.Save(ctx, v.Machine, dir, snapshot.SaveOptions{
		Diff: opts.Diff, Parent: opts.Parent, Devices: devs, Logger: opts.Logger,
	})
}

// deviceStates encodes the machine description and every device's state;
// the transports are paused.
func (v *VM) deviceStates() ([]snapshot.DeviceState, error) {
	pm := PersistedMachine{
		MemoryMiB: v.cfg.MemoryMiB, VCPUs: len(v.VCPUs()), CPUTemplate: v.cfg.CPUTemplate,
		DirtyLog: v.cfg.DirtyLog, Kernel: v.cfg.Kernel, Initrd: v.cfg.Initrd, Cmdline: v.Cmdline,
	}
	var out []snapshot.DeviceState
	add := func(name string, val any) error {
		b, err := json.Marshal(val)
		if err != nil {
			return fmt.Errorf("%w: encoding %s: %w", ErrSnapshot, name, err)
		}
		out = append(out, snapshot.DeviceState{Name: name, Version: BlobVersion, Data: b})
		return nil
	}
	var blobs []snapshot.DeviceState
	nets := 0
	for slot, a := range v.devices {
		base, gsi, err := x86.VirtioMMIOSlot(slot)
		if err != nil {
			return nil, err
		}
		pm.Devices = append(pm.Devices, PersistedSlot{Slot: slot, Kind: a.kind, Base: base, GSI: gsi})
		trs, err := a.tr.State()
		if err != nil {
			return nil, fmt.Errorf("%w: %s transport: %w", ErrSnapshot, a.kind, err)
		}
		pv := PersistedVirtio{Kind: a.kind, Transport: trs}
		switch d := a.dev.(type) {
		case *block.Device:
			st := d.State()
			pv.Block = &st
		case *vnet.Device:
			pn := &PersistedNet{State: d.State()}
			if nets < len(v.cfg.Nets) {
				pn.HostAddr = v.cfg.Nets[nets].HostAddr
			}
			nets++
			pv.Net = pn
		case *rng.Device:
			st := d.State()
			pv.RNG = &st
		case *vsock.Device:
			st, err := d.Save()
			if err != nil {
				return nil, fmt.Errorf("%w: vsock: %w", ErrSnapshot, err)
			}
			b, err := st.MarshalBinary()
			if err != nil {
				return nil, err
			}
			pv.Vsock = &PersistedVsock{State: b, UDS: d.UDSPath()}
		default:
			return nil, fmt.Errorf("%w: device %T in slot %d cannot be saved", ErrSnapshot, a.dev, slot)
		}
		b, err := json.Marshal(pv)
		if err != nil {
			return nil, fmt.Errorf("%w: encoding slot %d: %w", ErrSnapshot, slot, err)
		}
		blobs = append(blobs, snapshot.DeviceState{Name: fmt.Sprintf("%s%d", VirtioBlobPrefix, slot), Version: BlobVersion, Data: b})
	}
	if err := add(MachineBlob, pm); err != nil {
		return nil, err
	}
	if err := add(SerialBlob, v.Serial.Save()); err != nil {
		return nil, err
	}
	return append(out, blobs...), nil
}

// IsLinuxSnapshot reports whether a snapshot was written by VM.Snapshot
// (it has the machine description blob).
func IsLinuxSnapshot(s *snapshot.Snapshot) bool {
	_, ok := s.State.Device(MachineBlob)
	return ok
}

// decodeBlob finds the blob called name and decodes its JSON into val.
func decodeBlob(s *snapshot.Snapshot, name string, val any) error {
	d, ok := s.State.Device(name)
	if !ok {
		return fmt.Errorf("%w: %s has no %q state (not a Linux snapshot?)", ErrSnapshot, s.Dir, name)
	}
	if d.Version != BlobVersion {
		return fmt.Errorf("%w: %q state version %d, this ember reads %d", ErrSnapshot, name, d.Version, BlobVersion)
	}
	if err := json.Unmarshal(d.Data, val); err != nil {
		return fmt.Errorf("%w: %q state: %w", ErrSnapshot, name, err)
	}
	return nil
}

// serialState decodes the serial blob.
func serialState(s *snapshot.Snapshot) (serial.State, error) {
	var st serial.State
	err := decodeBlob(s, SerialBlob, &st)
	return st, err
}
