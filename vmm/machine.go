package vmm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/embervm/ember/vmm/bus"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// Unclaimed says what happens when the guest touches an I/O port or MMIO
// address that no device claims.
type Unclaimed int

const (
	// UnclaimedFail stops the machine with an error naming the access. Test
	// guests use it: a stray access is a bug.
	UnclaimedFail Unclaimed = iota
	// UnclaimedIgnore reads all ones and drops writes, as real hardware does
	// for absent devices. Linux guests probe legacy ports and need it.
	UnclaimedIgnore
)

// Addresses KVM needs on Intel hosts for real-mode emulation, just below
// 4 GiB and outside guest RAM.
const (
	tssAddr         = 0xfffbd000
	identityMapAddr = 0xfffbc000
)

// Config describes the machine to create.
type Config struct {
	// VCPUs is the number of vCPUs (at least 1).
	VCPUs int
	// Memory is the guest memory; the machine takes ownership and registers
	// each region as a KVM memory slot.
	Memory *memory.Guest
	// NoIRQChip skips the in-kernel PIC/IOAPIC/LAPIC and PIT (test guests
	// that want HLT to exit). The default creates them.
	NoIRQChip bool
	// DirtyLog turns on KVM dirty-page logging for every slot.
	DirtyLog bool
	// Unclaimed is the policy for accesses no device claims.
	Unclaimed Unclaimed
	// Logger receives the machine's log records; nil means slog.Default().
	Logger *slog.Logger
}

// Machine is a KVM virtual machine with its memory, vCPUs and buses.
type Machine struct {
	sys  *kvm.System
	vm   *kvm.VM
	mem  *memory.Guest
	cfg  Config
	log  *slog.Logger
	pio  *bus.Bus
	mmio *bus.Bus

	vcpus []*VCPU

	mu      sync.Mutex
	started bool          // the watcher runs (Start, StartPaused or Stop)
	ran     bool          // the vCPUs were set running (Start, or a fired ResumeOn)
	stopped chan struct{} // closed once every vCPU has finished
	result  *Result
}

// Result is how a machine ended.
type Result struct {
	// Err is the first fatal error of any vCPU, nil for a clean stop.
	Err error
	// Stop is set when a device or the guest asked for the stop.
	Stop *StopRequest
}

// New creates the KVM VM, registers guest memory, creates the in-kernel
// interrupt controllers (unless cfg.NoIRQChip) and the vCPUs. The vCPUs are
// created but not started.
func New(sys *kvm.System, cfg Config) (_ *Machine, err error) {
	if cfg.VCPUs < 1 {
		return nil, fmt.Errorf("%w: %d vCPUs", ErrBadConfig, cfg.VCPUs)
	}
	if cfg.Memory == nil || len(cfg.Memory.Regions()) == 0 {
		return nil, fmt.Errorf("%w: no guest memory", ErrBadConfig)
	}
	if err := sys.RequireAll(); err != nil {
		return nil, err
	}
	if max, err := sys.CheckExtension(kvm.CapMaxVCPUs); err == nil && max > 0 && cfg.VCPUs > max {
		return nil, fmt.Errorf("%w: %d vCPUs, KVM allows %d", ErrBadConfig, cfg.VCPUs, max)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	vm, err := sys.CreateVM()
	if err != nil {
		return nil, err
	}
	m := &Machine{
		sys: sys, vm: vm, mem: cfg.Memory, cfg: cfg, log: log,
		pio: bus.New("pio"), mmio: bus.New("mmio"),
		stopped: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			m.stopVCPUs()
			m.closeFDs()
		}
	}()
	if err := vm.SetTSSAddr(tssAddr); err != nil {
		return nil, err
	}
	if err := vm.SetIdentityMapAddr(identityMapAddr); err != nil {
		return nil, err
	}
	var flags uint32
	if cfg.DirtyLog {
		flags |= kvm.MemLogDirtyPages
	}
	for i, r := range cfg.Memory.Regions() {
		err := vm.SetUserMemoryRegion(&kvm.UserspaceMemoryRegion{
			Slot: uint32(i), Flags: flags, GuestPhysAddr: r.GPA(), MemorySize: r.Size(),
			UserspaceAddr: uint64(hostAddr(r.Host())),
		})
		if err != nil {
			return nil, err
		}
	}
	// The irqchip comes after the memory slots: adding a slot to a VM that
	// already has one costs milliseconds on some KVM backends (7 ms vs
	// 0.1 ms for 128 MiB on kvm_pvm), as it flushes the MMU for the APIC page.
	if !cfg.NoIRQChip {
		if err := vm.CreateIRQChip(); err != nil {
			return nil, err
		}
		if err := vm.CreatePIT2(kvm.PITConfig{Flags: kvm.PITSpeakerDummy}); err != nil {
			return nil, err
		}
	}
	for i := 0; i < cfg.VCPUs; i++ {
		fd, err := vm.CreateVCPU(i)
		if err != nil {
			return nil, err
		}
		c, err := newVCPU(i, fd, m, log)
		if err != nil {
			fd.Close()
			return nil, err
		}
		m.vcpus = append(m.vcpus, c)
	}
	return m, nil
}

// KVM returns the underlying VM handle.
func (m *Machine) KVM() *kvm.VM { return m.vm }

// System returns the /dev/kvm handle the machine was made from.
func (m *Machine) System() *kvm.System { return m.sys }

// Memory returns guest memory.
func (m *Machine) Memory() *memory.Guest { return m.mem }

// VCPUs returns the vCPUs.
func (m *Machine) VCPUs() []*VCPU { return m.vcpus }

// PIO returns the port-I/O bus.
func (m *Machine) PIO() *bus.Bus { return m.pio }

// MMIO returns the MMIO bus.
func (m *Machine) MMIO() *bus.Bus { return m.mmio }

// HandleIO implements ExitHandler.
func (m *Machine) HandleIO(port uint16, data []byte, write bool) error {
	return m.dispatch(m.pio, uint64(port), data, write)
}

// HandleMMIO implements ExitHandler.
func (m *Machine) HandleMMIO(addr uint64, data []byte, write bool) error {
	return m.dispatch(m.mmio, addr, data, write)
}

func (m *Machine) dispatch(b *bus.Bus, addr uint64, data []byte, write bool) error {
	var err error
	if write {
		err = b.Write(addr, data)
	} else {
		err = b.Read(addr, data)
	}
	if err != nil && m.cfg.Unclaimed == UnclaimedIgnore && errors.Is(err, bus.ErrNoDevice) {
		if !write {
			for i := range data {
				data[i] = 0xff
			}
		}
		return nil
	}
	return err
}

// Start runs every vCPU and a watcher that ends the machine when any vCPU
// finishes (a fatal exit or a guest stop request). A machine made ready
// with StartPaused starts here too.
func (m *Machine) Start(ctx context.Context) error {
	m.mu.Lock()
	if m.ran {
		m.mu.Unlock()
		return fmt.Errorf("vmm: machine already started")
	}
	m.ran = true
	m.startWatch()
	m.mu.Unlock()
	return m.Resume(ctx)
}

// StartPaused makes the machine ready to run without running it: its
// watcher runs, so that a later Start, Resume or fired ResumeOn needs no
// new goroutine, and Wait waits for its end.
func (m *Machine) StartPaused() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.startWatch()
}

// startWatch starts the watcher once. Called with m.mu held.
func (m *Machine) startWatch() {
	if !m.started {
		m.started = true
		go m.watch()
	}
}

// ResumeOn arms the machine's first run for a message on fd (see
// VCPU.ResumeOn): when fd is readable, the first vCPU's thread calls
// prepare and, if it says run, starts the other vCPUs and enters the guest
// itself. The machine must be made ready with StartPaused and must not
// have run; a Start while prepare decides is the caller's race.
func (m *Machine) ResumeOn(fd int, prepare Prepare) error {
	return m.ResumeOnAny([]int{fd}, prepare)
}

// ResumeOnAny is ResumeOn for a message on any of fds.
func (m *Machine) ResumeOnAny(fds []int, prepare Prepare) error {
	m.mu.Lock()
	if m.ran || !m.started {
		m.mu.Unlock()
		return fmt.Errorf("vmm: ResumeOn needs a machine made ready with StartPaused that has not run")
	}
	m.mu.Unlock()
	return m.vcpus[0].ResumeOnAny(fds, func() (bool, func()) {
		m.mu.Lock()
		ran := m.ran
		m.mu.Unlock()
		if ran {
			return false, nil
		}
		run, then := prepare()
		if !run {
			return false, then
		}
		m.mu.Lock()
		m.ran = true
		m.mu.Unlock()
		for _, c := range m.vcpus[1:] {
			if err := c.Resume(context.Background()); err != nil {
				m.log.Error("starting a vCPU", "vcpu", c.ID(), "err", err)
			}
		}
		return true, then
	})
}

// stopVCPUs ends the vCPU threads of a machine that never started.
func (m *Machine) stopVCPUs() {
	for _, c := range m.vcpus {
		c.Stop(context.Background())
	}
}

// watch waits for the first vCPU to finish, stops the others and records
// the result.
func (m *Machine) watch() {
	cases := make(chan *VCPU, len(m.vcpus))
	for _, c := range m.vcpus {
		go func() { <-c.Done(); cases <- c }()
	}
	first := <-cases
	res := &Result{}
	if err := first.Err(); err != nil {
		var sr *StopRequest
		if errors.As(err, &sr) {
			res.Stop = sr
		} else {
			res.Err = err
			m.log.Debug("vCPU stopped the machine", "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range m.vcpus {
		if err := c.Stop(ctx); err != nil {
			m.log.Error("stopping vCPU", "vcpu", c.ID(), "err", err)
		}
	}
	m.mu.Lock()
	m.result = res
	m.mu.Unlock()
	close(m.stopped)
}

// Pause pauses every vCPU.
func (m *Machine) Pause(ctx context.Context) error {
	for _, c := range m.vcpus {
		if err := c.Pause(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Resume resumes every vCPU.
func (m *Machine) Resume(ctx context.Context) error {
	for _, c := range m.vcpus {
		if err := c.Resume(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Stop stops every vCPU and waits for the machine to end. A machine that
// was never started ends too: Wait then reports a clean stop.
func (m *Machine) Stop(ctx context.Context) error {
	m.mu.Lock()
	if len(m.vcpus) > 0 {
		m.startWatch()
	}
	started := m.started
	m.mu.Unlock()
	var errs []error
	for _, c := range m.vcpus {
		errs = append(errs, c.Stop(ctx))
	}
	if started {
		select {
		case <-m.stopped:
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
		}
	}
	return errors.Join(errs...)
}

// Wait blocks until the machine has ended and returns how.
func (m *Machine) Wait(ctx context.Context) (*Result, error) {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if !started {
		return nil, ErrNotStarted
	}
	select {
	case <-m.stopped:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.result, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Done is closed when a started machine has ended.
func (m *Machine) Done() <-chan struct{} { return m.stopped }

// Close stops the machine and releases its vCPUs, VM and memory.
func (m *Machine) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := m.Stop(ctx)
	return errors.Join(err, m.closeFDs())
}

func (m *Machine) closeFDs() error {
	var errs []error
	for _, c := range m.vcpus {
		errs = append(errs, c.fd.Close())
	}
	m.vcpus = nil
	if m.vm != nil {
		errs = append(errs, m.vm.Close())
		m.vm = nil
	}
	if m.mem != nil {
		errs = append(errs, m.mem.Close())
		m.mem = nil
	}
	return errors.Join(errs...)
}

// DirtyPages returns, per memory region, the pages written since the last
// call (or since the machine was created). It needs Config.DirtyLog.
func (m *Machine) DirtyPages() ([]memory.Bitmap, error) {
	if !m.cfg.DirtyLog {
		return nil, fmt.Errorf("%w: dirty logging is off", ErrBadConfig)
	}
	var out []memory.Bitmap
	for i, r := range m.mem.Regions() {
		b := memory.NewBitmap(r.Pages())
		if err := m.vm.GetDirtyLog(uint32(i), b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}
