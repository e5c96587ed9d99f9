package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/lab/labproto"
)

// drainGrace bounds how long the channel is read after QEMU exited.
const drainGrace = 5 * time.Second

var errRunTimeout = errors.New("lab run timeout")

// Run boots a fresh L1, runs cfg.Args in it and returns the command's exit
// status. The command's output is streamed to cfg.Stdout and cfg.Stderr
// while it runs. A non-zero exit status is not an error. On every return
// path QEMU has been killed or has exited; Run leaves no files behind
// except those in the cache.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	t0 := time.Now()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	qemu, err := exec.LookPath(cfg.QEMU)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrQEMUMissing, err)
	}
	if err := CheckStatic(cfg.Ember); err != nil {
		return nil, err
	}
	if cfg.Files, err = withSharedLibraries(cfg.Files); err != nil {
		return nil, err
	}
	img, err := Prepare(ctx, cfg)
	if err != nil {
		return nil, err
	}
	spec := &labproto.Spec{
		Args: cfg.Args, Env: guestEnv(cfg.Env), Dir: cfg.Dir,
		Modules: img.guestModules, HostTime: time.Now().UnixNano(),
		Heartbeat: cfg.FreezeTimeout / 5,
	}
	initrd, err := buildInitrd(img.Base, &cfg, spec)
	if err != nil {
		return nil, err
	}
	defer initrd.Close()

	tl := newTail(consoleTailBytes)
	console := io.Writer(tl)
	var sinks []io.Writer
	if cfg.Console != nil {
		sinks = append(sinks, cfg.Console)
	}
	if cfg.ConsoleLog != "" {
		f, err := os.Create(cfg.ConsoleLog)
		if err != nil {
			return nil, fmt.Errorf("lab: console log: %w", err)
		}
		defer f.Close()
		sinks = append(sinks, f)
	}
	if len(sinks) > 0 {
		console = io.MultiWriter(append([]io.Writer{tl}, sinks...)...)
	}

	ctx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, errRunTimeout)
	defer cancel()
	tStart := time.Now()
	m, err := startMachine(qemu, qemuArgs(&cfg, img.Kernel.Image), initrd, console)
	if err != nil {
		return nil, err
	}
	defer m.conn.Close()
	defer m.mon.Close()
	slog.Debug("lab: L1 started", "pid", m.cmd.Process.Pid, "prepare", tStart.Sub(t0))

	var rep report
	finished := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		readChannel(m.conn, cfg.Stdout, cfg.Stderr, &rep, finished)
	}()

	var waitErr error
	stopped, frozen := false, false
	var frozenCPU string // L1's registers when it froze or timed out
	// A silent L1 gets nudges (see nudges), the last at nudgedAt, its
	// last frame having come at nudgedLast; silentCPU is its state before
	// the first.
	var (
		nudged               int
		nudgedAt, nudgedLast time.Time
		silentCPU            string
	)
	beat := time.NewTicker(time.Second)
	defer beat.Stop()
	for !stopped {
		select {
		case <-beat.C:
			// Every second, a Nudge byte: a device interrupt in L1. QEMU's
			// emulated SVM sometimes drops the CPU's interrupt request
			// while an interrupt is pending in the local APIC; the halted
			// L1 then sleeps until some new interrupt arrives. This bounds
			// that to a second.
			if r := rep.snapshot(); !r.hello.IsZero() && !r.exited {
				_ = m.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				_, _ = m.conn.Write([]byte{labproto.Nudge})
				// The deadline would also fail readChannel's Ack.
				_ = m.conn.SetWriteDeadline(time.Time{})
			}
			// Once the command runs the agent sends a frame at least every
			// FreezeTimeout/5; silence for cfg.FreezeTimeout means L1 as a
			// whole stopped (seen with QEMU's emulated nested SVM).
			r := rep.snapshot()
			if frozen || r.started.IsZero() || r.exited {
				break
			}
			silent := time.Since(r.last)
			switch {
			case nudged > 0 && r.last.After(nudgedAt):
				fmt.Fprintf(cfg.Stderr, "lab: L1 answers again %v after %s (it was silent for %v)\n",
					r.last.Sub(nudgedAt).Round(time.Millisecond), nudges[nudged-1].name, nudgedAt.Sub(nudgedLast).Round(time.Second))
				nudged = 0
			case nudged < len(nudges) && silent > cfg.FreezeTimeout/2+time.Duration(nudged)*cfg.FreezeTimeout/8:
				// Seen in frozen L1s: the vCPU halted with interrupts
				// on and the timer interrupt pending in the local APIC,
				// never delivered. Note the state, then try to wake it.
				if nudged == 0 {
					nudgedLast = r.last
					silentCPU = annotateRIP(cpuState(m.mon), r.text)
				}
				n := nudges[nudged]
				for _, c := range n.commands {
					_, _ = monitorCommand(m.mon, c)
				}
				nudged++
				nudgedAt = time.Now()
				fmt.Fprintf(cfg.Stderr, "lab: no word from L1 for %v; %s\n", silent.Round(time.Second), n.name)
			case silent > cfg.FreezeTimeout:
				frozen = true
				frozenCPU = annotateRIP(cpuState(m.mon), r.text)
				if silentCPU != "" {
					frozenCPU = "before the nudges:\n" + silentCPU + "\nafter them:\n" + frozenCPU
				}
				m.kill()
			}
		case waitErr = <-m.done:
			stopped = true
		case <-finished:
			// The agent reported everything; powering L1 off cleanly
			// would only cost time.
			finished = nil
			m.kill()
		case <-ctx.Done():
			if context.Cause(ctx) == errRunTimeout {
				frozenCPU = annotateRIP(cpuState(m.mon), rep.snapshot().text)
			}
			m.kill()
			waitErr = <-m.done
			stopped = true
		}
	}
	// QEMU has exited, so its end of the channel is closed: the reader
	// drains what is left and sees EOF.
	select {
	case <-readerDone:
	case <-time.After(drainGrace):
		m.conn.Close()
		<-readerDone
	}
	r := rep.snapshot()
	res := &Result{ExitCode: r.code, Console: tl.String(), GuestBoot: r.guestBoot, Total: time.Since(t0)}
	if !r.started.IsZero() {
		res.Boot = r.started.Sub(tStart)
	}
	switch {
	case r.exited && r.err == nil:
		return res, nil
	case frozen:
		return res, fmt.Errorf("%w: no word from L1 for %v, %v after the command started; QEMU killed%s%s",
			ErrFrozen, cfg.FreezeTimeout, r.last.Sub(r.started).Round(time.Millisecond), cpuNote(frozenCPU), consoleNote(res.Console))
	case r.fail != "":
		return res, fmt.Errorf("%w: %s", ErrStart, r.fail)
	case context.Cause(ctx) == errRunTimeout:
		phase := "before the command started"
		if !r.started.IsZero() {
			phase = fmt.Sprintf("%v after the command started", time.Since(r.started).Round(time.Millisecond))
		}
		return res, fmt.Errorf("%w after %v (%s); QEMU killed%s%s", ErrTimeout, cfg.Timeout, phase, cpuNote(frozenCPU), consoleNote(res.Console))
	case ctx.Err() != nil:
		return res, fmt.Errorf("lab: %w; QEMU killed", ctx.Err())
	case r.err != nil:
		return res, fmt.Errorf("%w%s", r.err, consoleNote(res.Console))
	case r.started.IsZero():
		return res, fmt.Errorf("%w (QEMU: %v)%s%s", ErrBoot, waitErr, qemuNote(m.errb.String()), consoleNote(res.Console))
	default:
		return res, fmt.Errorf("%w (QEMU: %v)%s%s", ErrLost, waitErr, qemuNote(m.errb.String()), consoleNote(res.Console))
	}
}

// nudges are what the host tries, one after the other, on an L1 silent
// despite the Nudge bytes (see Run) before it declares it frozen: an NMI,
// then stopping and continuing the emulator. (Before the Nudge bytes,
// frozen L1s were halted with interrupts on and the timer vector pending in
// the LAPIC's IRR; neither of these woke them, a device interrupt did, in
// 20-40 ms.)
var nudges = []struct {
	name     string
	commands []string // monitor commands
}{
	{"sent it an NMI", []string{"nmi"}},
	{"stopped and continued QEMU", []string{"stop", "cont"}},
}

func cpuNote(regs string) string {
	if strings.TrimSpace(regs) == "" {
		return ""
	}
	return "\n--- L1 vCPU state (QEMU monitor) ---\n" + regs + "\n--- end of L1 vCPU state ---"
}

func consoleNote(c string) string {
	if strings.TrimSpace(c) == "" {
		return "\n(L1 console is empty)"
	}
	return "\n--- tail of L1 console ---\n" + strings.TrimRight(c, "\n") + "\n--- end of L1 console ---"
}

func qemuNote(s string) string {
	if s = strings.TrimSpace(s); s == "" {
		return ""
	}
	return "\nQEMU stderr: " + s
}

// guestEnv returns the command's environment: defaults overridden by env.
func guestEnv(env []string) []string {
	base := []string{
		"PATH=/bin:/sbin:/usr/bin:/usr/sbin",
		"HOME=/root",
		"TERM=dumb",
		labproto.GuestEnv + "=1",
	}
	out := make([]string, 0, len(base)+len(env))
	keys := map[string]int{}
	for _, kv := range append(base, env...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := keys[k]; ok {
			out[i] = kv
			continue
		}
		keys[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// Image is L1's kernel and base initramfs, ready to boot.
type Image struct {
	// Kernel is L1's kernel.
	Kernel *Kernel
	// Base is the cached base initramfs archive (busybox and modules).
	Base string
	// Modules are the kernel modules L1 loads, dependencies first.
	Modules []string

	guestModules []string
}

// Prepare fetches L1's kernel and builds its base initramfs if they are not
// cached yet. Only cfg's cache, kernel, busybox and module settings are
// used.
func Prepare(ctx context.Context, cfg Config) (*Image, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	k, err := PrepareKernel(ctx, cfg.Cache, cfg.KernelPackage)
	if err != nil {
		return nil, err
	}
	mods, err := resolveModules(k, append(append([]string{}, DefaultModules...), cfg.Modules...), optionalModules)
	if err != nil {
		return nil, err
	}
	base, err := baseImage(ctx, cfg.Cache, k, cfg.Busybox, mods)
	if err != nil {
		return nil, err
	}
	img := &Image{Kernel: k, Base: base}
	for _, m := range mods {
		img.Modules = append(img.Modules, m.name)
		img.guestModules = append(img.guestModules, path.Join("/lib/modules", k.Release, m.rel))
	}
	return img, nil
}

// buildInitrd returns an in-memory file (memfd) holding the base archive
// followed by this run's payload archive.
func buildInitrd(base string, cfg *Config, spec *labproto.Spec) (*os.File, error) {
	fd, err := unix.MemfdCreate("ember-lab-initrd", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("lab: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ember-lab-initrd")
	b, err := os.Open(base)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: %w", err)
	}
	defer b.Close()
	if _, err := io.Copy(f, b); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: initrd: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := writePayload(bw, cfg, spec); err != nil {
		f.Close()
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return nil, fmt.Errorf("lab: initrd: %w", err)
	}
	return f, nil
}

// withSharedLibraries adds the program interpreter and shared libraries of
// dynamically linked executables among files, so that they run in L1.
func withSharedLibraries(files []File) ([]File, error) {
	out := files
	have := map[string]bool{}
	for _, f := range files {
		have[path.Clean(f.GuestPath)] = true
	}
	for _, f := range files {
		libs, err := SharedLibraries(f.HostPath)
		if err != nil {
			return nil, err
		}
		for _, l := range libs {
			if !have[l.GuestPath] {
				have[l.GuestPath] = true
				out = append(out, l)
			}
		}
	}
	return out, nil
}
