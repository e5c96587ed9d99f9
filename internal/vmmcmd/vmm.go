// Package vmmcmd is the ember vmm command: one VMM (a test guest, a Linux
// boot, or a restore of either kind of snapshot) behind the control API on
// a Unix socket. ember vmm (cmd/ember) and the lean ember-vmm binary
// (cmd/ember-vmm, which a warm pool can be told to run) both run it. It
// imports only what a VMM runs, so that ember-vmm does not link (or
// initialize at every start) the rest of the ember CLI. A pooled VMM
// drops its binary's read-only pages from its page tables before it
// rehearses its claim (internal/residency), so that while it idles it maps
// little more than what the claim runs.
package vmmcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/embervm/ember/internal/residency"
	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/internal/vmmproc"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/kvm"
)

// SetLogger makes slog's default logger that of the ember binaries: text
// on standard error, at debug level if EMBER_DEBUG is set.
func SetLogger() {
	level := slog.LevelInfo
	if os.Getenv("EMBER_DEBUG") != "" {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
}

// Run is ember vmm: it defines the command's flags on fs, parses args
// (the words after "vmm") and runs one VMM until the VM has ended or ctx
// is cancelled. fs's name and Usage are the caller's: ember vmm and
// ember-vmm name themselves in their help.
func Run(ctx context.Context, fs *flag.FlagSet, args []string) error {
	sock := fs.String("api-sock", "", "path of the API socket to create (required)")
	id := fs.String("id", "", "instance id (default: the pid)")
	bootCfg := fs.String("config", "", "boot a Linux VM described by this JSON file (vmm/boot.Config: kernel, initrd, cmdline, memory_mib, vcpus, drives, nets, vsock, rng)")
	console := fs.String("console", "", "with --config or --restore: append the guest's serial console to this file (default: discard)")
	program := fs.String("testguest", "", "run this built-in test guest: "+GuestNames())
	image := fs.String("image", "", "run this test-guest image file")
	memMiB := fs.Uint64("mem", 64, "guest memory in MiB (test guests)")
	start := fs.Bool("start", false, "start the VM at once instead of waiting, paused, for a start or resume action")
	readyFD := fs.Int("ready-fd", -1, "write \"ready\\n\" to this inherited fd once the API serves")
	linger := fs.Duration("linger", 5*time.Second, "after the VM ends, keep serving this long for a final /wait or /metrics")
	leaseFD := fs.Int("lease-fd", -1, "inherited SOCK_SEQPACKET socket from a supervisor (the warm pool): the VM waits paused for one claim on it (vmm/api.LeaseClaim), and EOF before that ends this VMM")
	claimFD := fs.Int("claim-fd", -1, "with --lease-fd: inherited bound SOCK_DGRAM socket where a claimer may claim the VM itself (a vmm/api.LeaseClaim datagram passing the socket to answer on, answered with the handover); the supervisor is then told on the lease")
	idleTrim := fs.Bool("idle-trim", false, "with --lease-fd: before the VM waits, drop this binary's read-only pages from the page tables, so that an idle VMM maps little more than its claim runs (the warm pool sets it for the VMMs it keeps ready, not for a cold start's)")
	restoreDir := fs.String("restore", "", "restore this snapshot instead of booting: a Linux VM (ember snapshot create) or a test guest (ember snapshot testguest --program identity); the VM waits paused unless --start")
	backend := fs.String("backend", "mmap", "with --restore: memory backend copy, mmap, uffd or prefetch")
	vsockUDS := fs.String("vsock-uds", "", "with --restore: vsock Unix socket path (default: the API socket's path + \".vsock\")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sock == "" {
		return errors.New("--api-sock is required")
	}
	if *leaseFD >= 0 && *start {
		return errors.New("--lease-fd: a leased VM waits paused for its claim; drop --start")
	}
	if *idleTrim && *leaseFD < 0 {
		return errors.New("--idle-trim needs --lease-fd")
	}
	if *claimFD >= 0 && *leaseFD < 0 {
		return errors.New("--claim-fd needs --lease-fd")
	}
	if *id == "" {
		*id = strconv.Itoa(os.Getpid())
	}
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	var inst *vmmproc.Instance
	vsock := "" // the VM's vsock socket, if it has one
	if *restoreDir != "" {
		var set []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "config", "testguest", "image", "mem":
				set = append(set, "--"+f.Name)
			}
		})
		if len(set) > 0 {
			return fmt.Errorf("--restore takes the VM from the snapshot; do not combine it with %s", strings.Join(set, ", "))
		}
		snap, err := snapshot.Open(*restoreDir)
		if err != nil {
			return fmt.Errorf("--restore: %w", err)
		}
		switch {
		case boot.IsLinuxSnapshot(snap):
			r, h, cleanup, err := restoreForVMM(ctx, sys, snap, *backend, *console, *sock, *vsockUDS)
			if err != nil {
				return err
			}
			defer cleanup()
			ai := &agentIdentity{uds: h.VsockUDS}
			vsock = h.VsockUDS
			inst = vmmproc.New(*id, r.Machine, "restore:"+*backend, vmmproc.Hooks{
				Snapshot: h.Snapshot, Restore: h.Restore,
				ApplyIdentity: ai.Apply, AfterResume: ai.AfterResume, AfterPause: ai.AfterPause,
				Drives: r.VM, BeforeStart: r.BeforeStart,
			})
		case guestrun.IsTestGuestSnapshot(snap):
			if *console != "" || *vsockUDS != "" {
				return fmt.Errorf("%s is a test-guest snapshot: it has no console or vsock (drop --console and --vsock-uds)", *restoreDir)
			}
			p, hooks, cleanup, err := restoreTestGuestForVMM(ctx, sys, snap, *backend)
			if err != nil {
				return err
			}
			defer cleanup()
			inst = vmmproc.New(*id, p.Machine, "restore:"+*backend, hooks)
		default:
			return fmt.Errorf("--restore: %s is neither a Linux (ember snapshot create) nor a test-guest (ember snapshot testguest) snapshot", *restoreDir)
		}
	} else if *bootCfg != "" {
		if *program != "" || *image != "" {
			return errors.New("--config boots Linux; do not combine it with --testguest or --image")
		}
		vm, closeVM, err := bootFromConfig(ctx, sys, *bootCfg, *console)
		if err != nil {
			return err
		}
		defer closeVM()
		inst = vmmproc.New(*id, vm.Machine, "boot", vmmproc.Hooks{Snapshot: linuxSnapshotHook(vm), Drives: vm})
	} else {
		img, err := vmmImage(*program, *image, *memMiB<<20)
		if err != nil {
			return err
		}
		g, err := testguest.NewMachine(ctx, sys, img, testguest.Options{}, false)
		if err != nil {
			return err
		}
		defer g.Close()
		inst = vmmproc.New(*id, g.Machine, "testguest", vmmproc.Hooks{
			Reports: g.Ports.Reports, FirstReport: g.Ports.FirstWrite,
			ApplyIdentity: func(_ context.Context, idn api.Identity) error {
				return testguest.WriteIdentity(g.Memory(), idn.Nonce)
			},
			PrepareIdentity: func() error { return testguest.PrepareIdentity(g.Memory()) },
		})
	}
	var lease *os.File
	lopts := vmmproc.LeaseOptions{Handover: api.LeaseAnswer{PID: os.Getpid(), Socket: *sock, Vsock: vsock, Console: *console}}
	if *leaseFD >= 0 {
		lease = os.NewFile(uintptr(*leaseFD), "lease")
		if *claimFD >= 0 {
			lopts.Direct = os.NewFile(uintptr(*claimFD), "direct-claim")
		}
	}
	return serveInstance(ctx, inst, *sock, *readyFD, *start, *linger, lease, lopts, *idleTrim)
}

func vmmImage(program, image string, mem uint64) (*testguest.Image, error) {
	switch {
	case image != "" && program != "":
		return nil, errors.New("give --testguest or --image, not both")
	case image != "":
		b, err := os.ReadFile(image)
		if err != nil {
			return nil, err
		}
		img, err := testguest.ParseImage(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", image, err)
		}
		return img, nil
	case program != "":
		g, ok := Guests[program]
		if !ok {
			return nil, fmt.Errorf("unknown test guest %q (have %s)", program, GuestNames())
		}
		code, err := g.Build(mem)
		if err != nil {
			return nil, err
		}
		img := testguest.NewImage(code, mem)
		return img, img.Validate()
	}
	return nil, errors.New("nothing to run: give --testguest or --image")
}

// serveInstance serves the API for inst until the VM has ended (and a
// final /wait was answered or linger passed) or ctx is cancelled. It
// removes the socket on the way out. With a lease (ember vmm --lease-fd)
// the VM waits paused for its claim there, and ends if the lease closes
// first; with trim it first drops the binary's read-only pages.
func serveInstance(ctx context.Context, inst *vmmproc.Instance, sock string, readyFD int, start bool, linger time.Duration, lease *os.File, lopts vmmproc.LeaseOptions, trim bool) error {
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	l, err := api.Listen(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	if start {
		if err := inst.Start(ctx); err != nil {
			l.Close()
			return err
		}
	} else {
		inst.StartPaused()
	}
	if lease != nil {
		// A VMM kept ready idles until its claim: what it touched of the
		// binary to get here (flags, snapshot decoding, the restore) need
		// not stay mapped. ServeLease then maps back what the claim
		// runs, as it rehearses it (vmm.VCPU.Prime, the lease codec). A
		// cold start's VMM is claimed at once: it skips the 0.1 ms.
		if trim {
			if n, err := residency.DropExecutablePages(); err != nil {
				slog.Warn("trimming the idle VMM", "err", err)
			} else {
				slog.Debug("dropped the binary's read-only pages from the page tables", "bytes", n)
			}
		}
		if err := inst.ServeLease(ctx, lease, cancelAll, lopts); err != nil {
			l.Close()
			return fmt.Errorf("--lease-fd: %w", err)
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- api.Serve(sctx, l, inst, slog.Default()) }()
	if readyFD >= 0 {
		f := os.NewFile(uintptr(readyFD), "ready")
		_, err := f.Write([]byte("ready\n"))
		f.Close()
		if err != nil {
			return fmt.Errorf("--ready-fd %d: %w", readyFD, err)
		}
	}
	select {
	case <-inst.Machine().Done():
		select {
		case <-time.After(linger):
		case <-ctx.Done():
		case <-inst.Waited():
			time.Sleep(50 * time.Millisecond) // let the /wait answer flush
		}
	case <-ctx.Done():
		stopCtx, c := context.WithTimeout(context.Background(), 5*time.Second)
		inst.Stop(stopCtx)
		c()
	case err := <-errc:
		return err
	}
	cancel()
	return <-errc
}

// bootFromConfig builds a Linux VM from a JSON boot configuration, its
// console appended to consolePath (or discarded).
func bootFromConfig(ctx context.Context, sys *kvm.System, path, consolePath string) (*boot.VM, func(), error) {
	cfg, err := boot.ReadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	var console *os.File
	if consolePath != "" {
		if console, err = os.OpenFile(consolePath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return nil, nil, err
		}
		cfg.Console = console
	}
	vm, err := boot.Build(ctx, sys, cfg, nil)
	if err != nil {
		if console != nil {
			console.Close()
		}
		return nil, nil, err
	}
	return vm, func() {
		vm.Close()
		if console != nil {
			console.Close()
		}
	}, nil
}
