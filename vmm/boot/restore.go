package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/embervm/ember/internal/eventfd"
	"github.com/embervm/ember/internal/tap"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/arch/x86"
	"github.com/embervm/ember/vmm/devices/serial"
	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	vnet "github.com/embervm/ember/vmm/devices/virtio/net"
	"github.com/embervm/ember/vmm/devices/virtio/rng"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// RestoreOptions say how to restore a Linux snapshot and which host
// resources replace the saved ones.
type RestoreOptions struct {
	// Backend serves guest memory (copy, mmap, uffd, prefetch); empty
	// means mmap.
	Backend snapshot.Backend
	// Record records the working set with the uffd backend too (prefetch
	// records whenever the snapshot has no working set yet).
	Record bool
	// Console receives the guest's serial output (nil discards it).
	Console io.Writer
	// OnMark is called for each boot-time marker the guest writes.
	OnMark func(code uint8, sinceStart time.Duration)
	// DrivePaths, by drive index (the order of Config.Drives), replace the
	// saved image paths; empty entries keep the saved path. The image must
	// have the saved size. Spare drive slots are not drives here: an empty
	// slot restores empty, an attached one reopens its saved image.
	DrivePaths []string
	// VsockUDS replaces the vsock device's Unix socket path (needed when
	// the snapshotted VM still runs, or several restores run at once).
	VsockUDS string
	// VsockCID, if not zero, gives the guest a new CID (it learns it from
	// the transport reset).
	VsockCID uint64
	// Nets, by interface index, replace the TAP name and host address of
	// the saved interfaces; a missing entry recreates the saved TAP name
	// and address.
	Nets []NetInterface
	// PrefetchBeforeStart makes Start install the working set (prefetch
	// backend) before the vCPUs run, instead of racing them: the first
	// instruction comes later, but the guest takes no faults on its
	// working set (where a fault is dear, as in the nested lab).
	PrefetchBeforeStart bool
	// Logger; nil means slog.Default().
	Logger *slog.Logger

	access memory.Accessor // the restored memory's, for the devices
}

// Restored is a Linux VM rebuilt from a snapshot, not yet running.
type Restored struct {
	*VM
	// Source is the snapshot it came from.
	Source *snapshot.Snapshot
	// Memory serves guest memory; closed by Close after the machine.
	Memory *snapshot.Memory
	// Took is how long Restore took (snapshot open to a runnable VM).
	Took time.Duration

	prefetchFirst bool
}

// Start runs the restored vCPUs and starts installing the working set
// (prefetch backend), or with RestoreOptions.PrefetchBeforeStart installs
// it first: BeforeStart, then the VM's Start.
func (r *Restored) Start(ctx context.Context) error {
	if err := r.BeforeStart(ctx); err != nil {
		return err
	}
	if err := r.VM.Start(ctx); err != nil {
		return err
	}
	r.Memory.StartPrefetch()
	return nil
}

// BeforeStart readies the restored VM for its vCPUs' first run, for a
// caller that runs them itself: the guest clock, and with
// RestoreOptions.PrefetchBeforeStart the working set. It does not wait
// for the vCPUs.
func (r *Restored) BeforeStart(ctx context.Context) error {
	// The guest's clock resumes where the snapshot left it, however long
	// the restored VM waited paused (in a warm pool, say): kvmclock runs
	// while no vCPU does, and a guest that wakes to a jump spends its first
	// moments on expired timers. The agent steps wall time to the present.
	if st := r.Source.State.Machine; st != nil {
		if err := r.KVM().SetClock(kvm.ClockData{Clock: st.VM.Clock.Clock}); err != nil {
			return fmt.Errorf("boot: restore the guest clock: %w", err)
		}
	}
	if r.prefetchFirst {
		r.Memory.StartPrefetch()
		if _, err := r.Memory.WaitPrefetch(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the VM, releases its devices and then its memory.
func (r *Restored) Close() error {
	err := r.VM.Close()
	return errors.Join(err, r.Memory.Close())
}

// Restore rebuilds the Linux VM saved by VM.Snapshot in dir, without
// loading a kernel: guest memory from the snapshot through opts.Backend,
// the KVM state of the VM and its vCPUs, the serial port (console to
// opts.Console), and every virtio device from its state with new host
// resources (image files reopened, a new TAP, a new vsock listener) behind
// a restored transport. A restored vsock device sends TRANSPORT_RESET when
// its transport reactivates it; pending interrupts are raised again. The
// VM is returned paused (never started): Start runs it.
func Restore(ctx context.Context, sys *kvm.System, dir string, opts RestoreOptions) (*Restored, error) {
	snap, err := snapshot.Open(dir)
	if err != nil {
		return nil, err
	}
	return RestoreFrom(ctx, sys, snap, opts)
}

// RestoreFrom is Restore for a snapshot the caller has opened already (to
// tell its kind, say), so that it is not read and parsed twice.
func RestoreFrom(ctx context.Context, sys *kvm.System, snap *snapshot.Snapshot, opts RestoreOptions) (_ *Restored, err error) {
	t0 := snap.OpenedAt
	if t0.IsZero() {
		t0 = time.Now()
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Backend == "" {
		opts.Backend = snapshot.BackendMmap
	}
	var pm PersistedMachine
	if err := decodeBlob(snap, MachineBlob, &pm); err != nil {
		return nil, err
	}
	sst, err := serialState(snap)
	if err != nil {
		return nil, err
	}
	pvs := make([]PersistedVirtio, len(pm.Devices))
	for i, d := range pm.Devices {
		if d.Slot != i {
			return nil, fmt.Errorf("%w: device %d claims slot %d", ErrSnapshot, i, d.Slot)
		}
		if err := decodeBlob(snap, fmt.Sprintf("%s%d", VirtioBlobPrefix, i), &pvs[i]); err != nil {
			return nil, err
		}
		if pvs[i].Kind != d.Kind {
			return nil, fmt.Errorf("%w: slot %d is %s in the machine, %s in its blob", ErrSnapshot, i, d.Kind, pvs[i].Kind)
		}
	}
	if pm.VCPUs != len(snap.State.Machine.CPUs) {
		return nil, fmt.Errorf("%w: machine has %d vCPUs, KVM state %d", ErrSnapshot, pm.VCPUs, len(snap.State.Machine.CPUs))
	}
	if pm.MemoryMiB<<20 != snap.State.MemorySize() {
		return nil, fmt.Errorf("%w: machine has %d MiB of memory, the snapshot's memory is %d bytes", ErrSnapshot, pm.MemoryMiB, snap.State.MemorySize())
	}
	mem, err := snapshot.OpenMemory(ctx, snap, snapshot.MemoryOptions{Backend: opts.Backend, Record: opts.Record, Logger: log})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			mem.Close()
		}
	}()
	m, err := vmm.New(sys, vmm.Config{
		VCPUs: pm.VCPUs, Memory: mem.Guest(), DirtyLog: pm.DirtyLog,
		Unclaimed: vmm.UnclaimedIgnore, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	cfg := Config{
		Kernel: pm.Kernel, Initrd: pm.Initrd, MemoryMiB: pm.MemoryMiB, VCPUs: pm.VCPUs,
		CPUTemplate: pm.CPUTemplate, DirtyLog: pm.DirtyLog, Console: opts.Console, OnMark: opts.OnMark,
	}
	v := &VM{Machine: m, Cmdline: pm.Cmdline}
	defer func() {
		if err != nil {
			v.Machine.Close()
			v.closeDevices()
		}
	}()
	// KVM state first: the restored transports may raise interrupts into
	// the restored interrupt controllers.
	if err := snapshot.Restore(ctx, m, snap); err != nil {
		return nil, err
	}
	if err := v.addLegacyDevices(cfg); err != nil {
		return nil, err
	}
	if err := v.Serial.Restore(sst); err != nil {
		return nil, fmt.Errorf("%w: serial: %w", ErrSnapshot, err)
	}
	opts.access = mem.Accessor()
	nets := 0
	for i, pv := range pvs {
		if err := v.restoreVirtio(pm.Devices[i], pv, &cfg, &opts, &nets); err != nil {
			return nil, fmt.Errorf("boot: restoring %s in slot %d: %w", pv.Kind, i, err)
		}
	}
	v.cfg = cfg
	mem.Attach(m)
	r := &Restored{VM: v, Source: snap, Memory: mem, Took: time.Since(t0), prefetchFirst: opts.PrefetchBeforeStart}
	log.Debug("restored Linux VM", "dir", snap.Dir, "backend", opts.Backend, "devices", len(pvs), "took", r.Took)
	return r, nil
}

// restoreVirtio rebuilds one device from its blob and puts it in its slot
// behind a restored transport; cfg collects what a later snapshot of the
// restored VM records.
func (v *VM) restoreVirtio(slot PersistedSlot, pv PersistedVirtio, cfg *Config, opts *RestoreOptions, nets *int) error {
	base, gsi, err := x86.VirtioMMIOSlot(slot.Slot)
	if err != nil {
		return err
	}
	if base != slot.Base || gsi != slot.GSI {
		return fmt.Errorf("%w: slot %d at %#x IRQ %d in the snapshot, %#x IRQ %d here", ErrSnapshot, slot.Slot, slot.Base, slot.GSI, base, gsi)
	}
	var (
		dev     virtio.Device
		closers []io.Closer
	)
	switch pv.Kind {
	case "block":
		if pv.Block == nil {
			return fmt.Errorf("%w: no block state", ErrSnapshot)
		}
		st := *pv.Block
		idx := len(cfg.Drives)
		if !st.Config.Spare && idx < len(opts.DrivePaths) && opts.DrivePaths[idx] != "" {
			st.Config.Path = opts.DrivePaths[idx]
		}
		d, err := block.FromState(st)
		if err != nil {
			return err
		}
		dev, closers = d, []io.Closer{d}
		if st.Config.Spare {
			v.spares = append(v.spares, d)
			cfg.SpareDrives++
		} else {
			cfg.Drives = append(cfg.Drives, Drive{Path: st.Config.Path, ReadOnly: st.Config.ReadOnly, ID: st.Config.ID})
		}
	case "net":
		if pv.Net == nil {
			return fmt.Errorf("%w: no net state", ErrSnapshot)
		}
		st := pv.Net.State
		ni := NetInterface{TAP: st.Config.HostDevName, HostAddr: pv.Net.HostAddr}
		if *nets < len(opts.Nets) {
			o := opts.Nets[*nets]
			ni.TAP, ni.NetNS = o.TAP, o.NetNS
			if o.HostAddr.IsValid() {
				ni.HostAddr = o.HostAddr
			}
		}
		*nets++
		tc := tap.Config{Name: ni.TAP, NetNS: ni.NetNS}
		if ni.HostAddr.IsValid() {
			tc.Addrs = []netip.Prefix{ni.HostAddr}
		}
		t, err := tap.Create(tc)
		if err != nil {
			return err
		}
		st.Config.HostDevName = t.Name()
		d, err := vnet.FromState(st, t)
		if err != nil {
			t.Close()
			return err
		}
		dev, closers = d, []io.Closer{d}
		v.taps = append(v.taps, t.Name())
		cfg.Nets = append(cfg.Nets, NetInterface{TAP: t.Name(), HostAddr: ni.HostAddr, GuestMAC: macString(st.Config.MAC), NetNS: ni.NetNS})
	case "rng":
		if pv.RNG == nil {
			return fmt.Errorf("%w: no rng state", ErrSnapshot)
		}
		d, err := rng.FromState(*pv.RNG)
		if err != nil {
			return err
		}
		dev = d
		cfg.RNG = true
	case "vsock":
		if pv.Vsock == nil {
			return fmt.Errorf("%w: no vsock state", ErrSnapshot)
		}
		var st vsock.State
		if err := st.UnmarshalBinary(pv.Vsock.State); err != nil {
			return err
		}
		uds := pv.Vsock.UDS
		if opts.VsockUDS != "" {
			uds = opts.VsockUDS
		}
		d, err := vsock.Restore(vsock.Config{GuestCID: opts.VsockCID, UDSPath: uds}, st)
		if err != nil {
			return err
		}
		dev, closers = d, []io.Closer{d}
		cfg.Vsock = &Vsock{GuestCID: d.CID(), UDS: uds}
	default:
		return fmt.Errorf("%w: unknown device kind %q", ErrSnapshot, pv.Kind)
	}
	closeAll := func() {
		for _, c := range closers {
			c.Close()
		}
	}
	irq, err := eventfd.New()
	if err != nil {
		closeAll()
		return err
	}
	if err := v.KVM().IRQFD(irq.Fd(), gsi); err != nil {
		irq.Close()
		closeAll()
		return fmt.Errorf("irqfd: %w", err)
	}
	// The restored memory's accessor: with uffd and prefetch it faults
	// pages in with a system call before device code touches them.
	tr, err := mmio.Restore(mmio.Config{Device: dev, Memory: opts.access, Interrupt: irq}, pv.Transport)
	if err != nil {
		irq.Close()
		closeAll()
		return err
	}
	v.devices = append(v.devices, &attachment{kind: pv.Kind, dev: dev, tr: tr, irq: irq, closers: closers})
	if err := v.MMIO().Insert(tr, base, mmio.Size); err != nil {
		return err
	}
	vm := v.KVM()
	err = tr.AttachIOEventFDs(base, func(e mmio.IOEvent) error {
		return vm.IOEventFD(kvm.IOEventFD{Addr: e.Addr, Len: e.Len, DataMatch: e.DataMatch,
			FD: int32(e.FD), Flags: kvm.IOEventFDFlagDataMatch})
	})
	if err != nil {
		return fmt.Errorf("ioeventfd: %w", err)
	}
	return nil
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// PumpInput feeds r to the guest's serial port until r ends or ctx is
// done, waiting for room in the receive FIFO instead of dropping bytes.
func (v *VM) PumpInput(ctx context.Context, r io.Reader) error {
	buf := make([]byte, 256)
	for {
		n, err := r.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			k, qerr := v.Serial.Enqueue(p)
			p = p[k:]
			if errors.Is(qerr, serial.ErrFIFOFull) || (qerr == nil && len(p) > 0) {
				select {
				case <-v.Serial.Drained():
				case <-ctx.Done():
					return ctx.Err()
				}
			} else if qerr != nil {
				return qerr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
