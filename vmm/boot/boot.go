package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/arch/x86"
	"github.com/embervm/ember/vmm/devices/bootmarker"
	"github.com/embervm/ember/vmm/devices/i8042"
	"github.com/embervm/ember/vmm/devices/serial"
	"github.com/embervm/ember/vmm/devices/virtio/block"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/loader"
	"github.com/embervm/ember/vmm/memory"
)

// VM is a machine built to boot Linux, with its legacy devices.
type VM struct {
	*vmm.Machine
	Serial  *serial.Serial
	Cmdline string
	Kernel  loader.Result

	cfg           Config // as built (or as restored): what a snapshot records
	marker        *bootmarker.Device
	devices       []*attachment
	spares        []*block.Device // spare drive slots, in slot order
	virtioCmdline []string
	taps          []string

	mu    sync.Mutex
	marks []bootmarker.Mark

	// driveMu keeps spare-drive attaches and detaches out of a snapshot's
	// device save.
	driveMu sync.Mutex
}

// Marks returns the boot-time markers the guest wrote so far.
func (v *VM) Marks() []bootmarker.Mark {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]bootmarker.Mark(nil), v.marks...)
}

// Close stops the VM and releases its devices (TAP devices included).
func (v *VM) Close() error {
	err := v.Machine.Close()
	return errors.Join(err, v.closeDevices())
}

// Start runs the VM; boot markers count from here.
func (v *VM) Start(ctx context.Context) error {
	v.marker.Reset(time.Now())
	return v.Machine.Start(ctx)
}

// Build creates the machine and loads everything a boot needs; Start runs it.
func Build(ctx context.Context, sys *kvm.System, cfg Config, log *slog.Logger) (_ *VM, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	ranges, err := x86.MemoryRanges(cfg.MemoryMiB << 20)
	if err != nil {
		return nil, err
	}
	mem, err := memory.NewAnonymous(ranges...)
	if err != nil {
		return nil, err
	}
	m, err := vmm.New(sys, vmm.Config{
		VCPUs: cfg.VCPUs, Memory: mem, DirtyLog: cfg.DirtyLog,
		Unclaimed: vmm.UnclaimedIgnore, Logger: log,
	})
	if err != nil {
		mem.Close()
		return nil, err
	}
	v := &VM{Machine: m, cfg: cfg}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	if v.Kernel, err = loadKernel(mem, cfg.Kernel); err != nil {
		return nil, err
	}
	initrdAddr, initrdSize, err := loadInitrd(mem, cfg, v.Kernel)
	if err != nil {
		return nil, err
	}
	if err := v.addVirtioDevices(cfg); err != nil {
		v.closeDevices()
		return nil, err
	}
	defer func() {
		if err != nil {
			v.closeDevices()
		}
	}()
	// Device entries go before the user's part, which may end with
	// "-- init arguments".
	v.Cmdline = strings.Join(append(append([]string{DefaultCmdline}, v.virtioCmdline...), cfg.Cmdline), " ")
	v.Cmdline = strings.TrimSpace(v.Cmdline)
	e820, err := x86.DefaultE820(cfg.MemoryMiB << 20)
	if err != nil {
		return nil, err
	}
	if err := x86.WriteBootParams(mem, x86.BootConfig{
		Cmdline: v.Cmdline, E820: e820, InitrdAddr: initrdAddr, InitrdSize: initrdSize,
		SetupHeader: v.Kernel.SetupHeader,
	}); err != nil {
		return nil, err
	}
	if err := x86.WriteMPTable(mem, cfg.VCPUs); err != nil {
		return nil, err
	}
	if err := setupVCPUs(ctx, v, cfg); err != nil {
		return nil, err
	}
	if err := v.addLegacyDevices(cfg); err != nil {
		return nil, err
	}
	return v, nil
}

func loadKernel(mem *memory.Guest, path string) (loader.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return loader.Result{}, fmt.Errorf("boot: kernel: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return loader.Result{}, err
	}
	res, err := loader.Load(mem, f, fi.Size())
	if err != nil {
		return loader.Result{}, fmt.Errorf("boot: kernel %s: %w", path, err)
	}
	return res, nil
}

func loadInitrd(mem *memory.Guest, cfg Config, k loader.Result) (addr, size uint64, err error) {
	if cfg.Initrd == "" {
		return 0, 0, nil
	}
	b, err := os.ReadFile(cfg.Initrd)
	if err != nil {
		return 0, 0, fmt.Errorf("boot: initrd: %w", err)
	}
	lowEnd := min(cfg.MemoryMiB<<20, uint64(x86.MMIOStart))
	addr, err = x86.PlaceInitrd(lowEnd, k.End, uint64(len(b)), k.SetupHeader)
	if err != nil {
		return 0, 0, fmt.Errorf("boot: initrd %s: %w", cfg.Initrd, err)
	}
	if err := mem.WriteAt(b, addr); err != nil {
		return 0, 0, fmt.Errorf("boot: initrd %s: %w", cfg.Initrd, err)
	}
	return addr, uint64(len(b)), nil
}

// setupVCPUs gives every vCPU its CPUID, MSRs, FPU and LAPIC, and vCPU 0
// the 64-bit entry state. The other vCPUs wait for INIT/SIPI from the
// kernel (KVM keeps application processors uninitialized).
func setupVCPUs(ctx context.Context, v *VM, cfg Config) error {
	supported, err := v.System().SupportedCPUID()
	if err != nil {
		return err
	}
	tmpl, _ := x86.ParseTemplate(cfg.CPUTemplate)
	for _, c := range v.VCPUs() {
		cpuid, err := x86.NormalizeCPUID(supported, x86.CPUIDConfig{VCPU: c.ID(), VCPUs: cfg.VCPUs, Template: tmpl})
		if err != nil {
			return err
		}
		err = c.Do(ctx, func(fd *kvm.VCPU) error {
			if err := fd.SetCPUID2(cpuid); err != nil {
				return err
			}
			msrs := x86.BootMSRs()
			if n, err := fd.SetMSRs(msrs); err != nil {
				return err
			} else if n != len(msrs) {
				return fmt.Errorf("boot: KVM refused boot MSR %#x", msrs[n].Index)
			}
			if err := fd.SetFPU(x86.BootFPU()); err != nil {
				return err
			}
			lapic, err := fd.GetLAPIC()
			if err != nil {
				return err
			}
			x86.SetupLINTs(lapic)
			if err := fd.SetLAPIC(lapic); err != nil {
				return err
			}
			if c.ID() != 0 {
				return nil
			}
			s, err := fd.GetSregs()
			if err != nil {
				return err
			}
			if s, err = x86.SetupLongMode(v.Memory(), s); err != nil {
				return err
			}
			if err := fd.SetSregs(s); err != nil {
				return err
			}
			return fd.SetRegs(x86.BootRegs(v.Kernel.Entry))
		})
		if err != nil {
			return fmt.Errorf("boot: vCPU %d: %w", c.ID(), err)
		}
	}
	return nil
}

// resetPort wraps the i8042 so that a guest reset (reboot=k) ends the
// machine cleanly from the vCPU that asked, instead of the device calling
// back into the machine.
type resetPort struct {
	dev   *i8042.Device
	reset bool
}

func (r *resetPort) Read(off uint64, data []byte) error { return r.dev.Read(off, data) }

func (r *resetPort) Write(off uint64, data []byte) error {
	if err := r.dev.Write(off, data); err != nil {
		return err
	}
	if r.reset {
		return &vmm.StopRequest{Code: 0, Reason: "guest reboot (i8042 reset)"}
	}
	return nil
}

func (v *VM) addLegacyDevices(cfg Config) error {
	vm := v.KVM()
	v.Serial = serial.New(&vmm.LineInterrupt{VM: vm, IRQ: x86.COM1IRQ}, cfg.Console)
	rp := &resetPort{}
	rp.dev = i8042.New(&vmm.LineInterrupt{VM: vm, IRQ: 1}, func() { rp.reset = true })
	start := time.Now()
	v.marker = bootmarker.New(start, func(mk bootmarker.Mark) {
		v.mu.Lock()
		v.marks = append(v.marks, mk)
		v.mu.Unlock()
		slog.Info("guest boot marker", "code", mk.Code, "since_start", mk.Elapsed.Round(time.Microsecond))
		if cfg.OnMark != nil {
			cfg.OnMark(mk.Code, mk.Elapsed)
		}
	})
	return errors.Join(
		v.PIO().Insert(v.Serial, x86.COM1, 8),
		v.PIO().Insert(rp, i8042.Base, i8042.Size),
		v.PIO().Insert(v.marker, bootmarker.Port, 1),
	)
}
