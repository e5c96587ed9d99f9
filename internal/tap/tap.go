// Package tap creates and configures Linux TAP devices for virtio-net
// backends: /dev/net/tun with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, a 12-byte
// virtio-net header (the virtio 1.x layout), offloads off unless asked for,
// and MAC, MTU, addresses and link state set over netlink.
//
// The device is not persistent: closing it removes the interface, so a
// crashed VMM leaves no TAP behind.
package tap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// VnetHdrSize is the virtio-net header each frame carries on the TAP fd
// (struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size,
// csum_start, csum_offset, num_buffers).
const VnetHdrSize = 12

// Offload flags for Config.Offload and SetOffload (TUN_F_*).
const (
	OffloadCsum = 0x01
	OffloadTSO4 = 0x02
	OffloadTSO6 = 0x04
	OffloadECN  = 0x08
	OffloadUFO  = 0x10
)

// Sentinel errors.
var (
	// ErrConfig: the configuration is unusable.
	ErrConfig = errors.New("tap: bad configuration")
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("tap: closed")
)

// Config describes a TAP device.
type Config struct {
	// Name is the interface name; empty lets the kernel pick "tapN".
	Name string
	// MAC is the host side's address; nil keeps the kernel's random one.
	MAC net.HardwareAddr
	// MTU; 0 keeps the default (1500).
	MTU int
	// Addrs are assigned to the interface.
	Addrs []netip.Prefix
	// Down leaves the link down; by default it is brought up.
	Down bool
	// Offload is the TUN_F_* set the VMM can handle; 0 (the default)
	// means the kernel sends plain frames with an empty header.
	Offload uint
	// NetNS is a network namespace path (/var/run/netns/NAME,
	// /proc/PID/ns/net); empty means the caller's.
	NetNS string
}

// Device is an open TAP device. Read and Write carry one frame each,
// preceded by a VnetHdrSize-byte virtio-net header. Read blocks the calling
// goroutine (not a thread) until a frame arrives or Close.
type Device struct {
	f     *os.File
	fd    int
	name  string
	index int
	nl    *netlink.Handle

	closeOnce sync.Once
	closeErr  error
}

// Create creates and configures a TAP device.
func Create(cfg Config) (_ *Device, err error) {
	if len(cfg.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("%w: name %q too long", ErrConfig, cfg.Name)
	}
	if cfg.MTU < 0 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("%w: MTU %d", ErrConfig, cfg.MTU)
	}
	if cfg.MAC != nil && len(cfg.MAC) != 6 {
		return nil, fmt.Errorf("%w: MAC %v", ErrConfig, cfg.MAC)
	}
	d := &Device{fd: -1}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	var nlns netns.NsHandle = -1
	err = inNetNS(cfg.NetNS, func() error {
		var err error
		if d.fd, d.name, err = open(cfg.Name); err != nil {
			return err
		}
		if cfg.NetNS != "" {
			nlns, err = netns.Get()
		}
		return err
	})
	if d.fd >= 0 {
		d.f = os.NewFile(uintptr(d.fd), "tap:"+d.name)
	}
	if err != nil {
		return nil, err
	}
	if nlns != -1 {
		d.nl, err = netlink.NewHandleAt(nlns, unix.NETLINK_ROUTE)
		nlns.Close()
	} else {
		// Only rtnetlink: the default also opens XFRM and netfilter sockets,
		// which fail with EPROTONOSUPPORT where those modules are not loaded.
		d.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("tap %s: netlink: %w", d.name, err)
	}
	if err := d.SetOffload(cfg.Offload); err != nil {
		return nil, err
	}
	if err := d.configure(cfg); err != nil {
		return nil, fmt.Errorf("tap %s: %w", d.name, err)
	}
	return d, nil
}

// open opens /dev/net/tun and attaches a TAP named name (or a new one).
func open(name string) (int, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("tap: open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("%w: %v", ErrConfig, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("tap %q: TUNSETIFF: %w", name, err)
	}
	name = ifr.Name()
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrSize); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", name, err)
	}
	return fd, name, nil
}

// inNetNS runs f on a thread in the namespace at path (or directly if path
// is empty). The thread is never returned to the Go scheduler, so no other
// goroutine inherits the namespace.
func inNetNS(path string, f func() error) error {
	if path == "" {
		return f()
	}
	done := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the thread exits with the goroutine.
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			done <- fmt.Errorf("tap: network namespace %s: %w", path, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- fmt.Errorf("tap: entering network namespace %s: %w", path, err)
			return
		}
		done <- f()
	}()
	return <-done
}

// configure sets MAC, MTU, addresses and link state.
func (d *Device) configure(cfg Config) error {
	link, err := d.nl.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	d.index = link.Attrs().Index
	if cfg.MAC != nil {
		if err := d.nl.LinkSetHardwareAddr(link, cfg.MAC); err != nil {
			return fmt.Errorf("set MAC %v: %w", cfg.MAC, err)
		}
	}
	if cfg.MTU != 0 {
		if err := d.nl.LinkSetMTU(link, cfg.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", cfg.MTU, err)
		}
	}
	for _, p := range cfg.Addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := d.nl.AddrAdd(link, a); err != nil {
			return fmt.Errorf("add address %v: %w", p, err)
		}
	}
	if !cfg.Down {
		if err := d.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
	}
	return nil
}

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// Index returns the interface index (in its namespace).
func (d *Device) Index() int { return d.index }

// SetOffload tells the kernel which offloads (TUN_F_*) the reader of the
// TAP handles; 0 makes it send only complete, checksummed frames.
func (d *Device) SetOffload(flags uint) error {
	if err := unix.IoctlSetInt(d.fd, unix.TUNSETOFFLOAD, int(flags)); err != nil {
		return fmt.Errorf("tap %s: TUNSETOFFLOAD %#x: %w", d.name, flags, err)
	}
	return nil
}

// Read reads one frame, with its virtio-net header, into p.
func (d *Device) Read(p []byte) (int, error) {
	n, err := d.f.Read(p)
	return n, mapErr(d.name, "read", err)
}

// Write sends one frame, with its virtio-net header, from p.
func (d *Device) Write(p []byte) (int, error) {
	n, err := d.f.Write(p)
	return n, mapErr(d.name, "write", err)
}

// Close closes the device, which removes the interface, and wakes a
// blocked Read with ErrClosed.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { d.closeErr = d.close() })
	return d.closeErr
}

func (d *Device) close() error {
	var errs []error
	if d.f != nil {
		errs = append(errs, d.f.Close())
	} else if d.fd >= 0 {
		errs = append(errs, unix.Close(d.fd))
	}
	if d.nl != nil {
		// A non-persistent TAP goes with its last descriptor; remove it
		// anyway if something made it persistent.
		if l, err := d.nl.LinkByIndex(d.index); err == nil && l.Attrs().Name == d.name {
			errs = append(errs, d.nl.LinkDel(l))
		}
		d.nl.Close()
	}
	return errors.Join(errs...)
}

func mapErr(name, op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("tap %s: %s: %w", name, op, err)
}
