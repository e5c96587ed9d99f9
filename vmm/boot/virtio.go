package boot

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/embervm/ember/internal/eventfd"
	"github.com/embervm/ember/internal/tap"
	"github.com/embervm/ember/vmm/arch/x86"
	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	vnet "github.com/embervm/ember/vmm/devices/virtio/net"
	"github.com/embervm/ember/vmm/devices/virtio/rng"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
	"github.com/embervm/ember/vmm/kvm"
)

// Drive is a virtio-blk disk backed by a raw image file.
type Drive struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// ID is the serial the guest sees (/sys/block/vdX/serial).
	ID string `json:"id,omitempty"`
}

// NetInterface is a virtio-net interface backed by a TAP device that the
// VMM creates (and removes when the VM closes).
type NetInterface struct {
	// TAP names the TAP device; empty lets the kernel pick one.
	TAP string `json:"tap,omitempty"`
	// HostAddr is assigned to the TAP (the host's side of the link).
	HostAddr netip.Prefix `json:"host_addr,omitempty"`
	// GuestMAC is the guest's MAC address (empty: a fixed local one).
	GuestMAC string `json:"guest_mac,omitempty"`
	// NetNS is the network namespace (a path such as /var/run/netns/NAME
	// or /proc/PID/ns/net) the TAP is created in; empty: the VMM's own. A
	// pod's TAP lives in the pod's namespace, next to its CNI interface.
	NetNS string `json:"netns,omitempty"`
}

// attachment is one virtio device on the MMIO bus and what to release.
type attachment struct {
	kind    string
	dev     virtio.Device
	tr      *mmio.Transport
	irq     *eventfd.EventFD
	closers []io.Closer
}

// attachVirtio puts dev in the next virtio-mmio slot: an irqfd for its
// interrupt, ioeventfds for its queue notifications, and its
// virtio_mmio.device= entry on the command line.
func (v *VM) attachVirtio(kind string, dev virtio.Device, closers ...io.Closer) error {
	slot := len(v.devices)
	base, gsi, err := x86.VirtioMMIOSlot(slot)
	if err != nil {
		return fmt.Errorf("boot: %s: %w", kind, err)
	}
	irq, err := eventfd.New()
	if err != nil {
		return err
	}
	a := &attachment{kind: kind, dev: dev, irq: irq, closers: closers}
	if err := v.KVM().IRQFD(irq.Fd(), gsi); err != nil {
		irq.Close()
		return fmt.Errorf("boot: %s irqfd: %w", kind, err)
	}
	tr, err := mmio.New(mmio.Config{Device: dev, Memory: v.Memory(), Interrupt: irq})
	if err != nil {
		irq.Close()
		return fmt.Errorf("boot: %s: %w", kind, err)
	}
	a.tr = tr
	v.devices = append(v.devices, a)
	if err := v.MMIO().Insert(tr, base, mmio.Size); err != nil {
		return err
	}
	vm := v.KVM()
	err = tr.AttachIOEventFDs(base, func(e mmio.IOEvent) error {
		return vm.IOEventFD(kvm.IOEventFD{Addr: e.Addr, Len: e.Len, DataMatch: e.DataMatch,
			FD: int32(e.FD), Flags: kvm.IOEventFDFlagDataMatch})
	})
	if err != nil {
		return fmt.Errorf("boot: %s ioeventfd: %w", kind, err)
	}
	v.virtioCmdline = append(v.virtioCmdline, mmio.Cmdline(mmio.Size, base, gsi))
	return nil
}

// addVirtioDevices creates the configured disks, network interfaces and
// entropy device.
func (v *VM) addVirtioDevices(cfg Config) error {
	for i, d := range cfg.Drives {
		dev, err := block.New(block.Config{Path: d.Path, ReadOnly: d.ReadOnly, ID: d.ID})
		if err != nil {
			return fmt.Errorf("boot: drive %d (%s): %w", i, d.Path, err)
		}
		if err := v.attachVirtio("block", dev, dev); err != nil {
			dev.Close()
			return err
		}
	}
	if err := v.addSpareDrives(cfg.SpareDrives); err != nil {
		return err
	}
	for i, n := range cfg.Nets {
		tc := tap.Config{Name: n.TAP, NetNS: n.NetNS}
		if n.HostAddr.IsValid() {
			tc.Addrs = []netip.Prefix{n.HostAddr}
		}
		t, err := tap.Create(tc)
		if err != nil {
			return fmt.Errorf("boot: net %d: %w", i, err)
		}
		mac, err := guestMAC(n.GuestMAC)
		if err != nil {
			t.Close()
			return fmt.Errorf("boot: net %d: %w", i, err)
		}
		dev, err := vnet.New(vnet.Config{MAC: mac, HostDevName: t.Name()}, t)
		if err != nil {
			t.Close()
			return fmt.Errorf("boot: net %d: %w", i, err)
		}
		if err := v.attachVirtio("net", dev, dev); err != nil {
			dev.Close()
			return err
		}
		v.taps = append(v.taps, t.Name())
	}
	if cfg.Vsock != nil {
		dev, err := vsock.New(vsock.Config{GuestCID: cfg.Vsock.GuestCID, UDSPath: cfg.Vsock.UDS})
		if err != nil {
			return fmt.Errorf("boot: vsock: %w", err)
		}
		if err := v.attachVirtio("vsock", dev, dev); err != nil {
			dev.Close()
			return err
		}
	}
	if cfg.RNG {
		dev, err := rng.New(rng.Config{})
		if err != nil {
			return err
		}
		if err := v.attachVirtio("rng", dev); err != nil {
			return err
		}
	}
	return nil
}

func guestMAC(s string) ([6]byte, error) {
	var mac [6]byte
	if s == "" {
		copy(mac[:], []byte{0x06, 0xe6, 0xbe, 0x00, 0x00, 0x01})
		return mac, nil
	}
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return mac, fmt.Errorf("bad guest MAC %q", s)
	}
	copy(mac[:], hw)
	return mac, nil
}

// closeDevices releases every virtio device after the vCPUs have stopped.
func (v *VM) closeDevices() error {
	var errs []error
	for _, a := range v.devices {
		errs = append(errs, a.tr.Close())
		for _, c := range a.closers {
			errs = append(errs, c.Close())
		}
		errs = append(errs, a.irq.Close())
	}
	v.devices, v.spares = nil, nil
	return errors.Join(errs...)
}

// TAPs returns the names of the TAP devices the VM created.
func (v *VM) TAPs() []string { return append([]string(nil), v.taps...) }
