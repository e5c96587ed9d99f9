// Package vm gives the shim a VM with a guest agent in it: claimed from
// the warm pool, restored from a snapshot profile, or cold booted with
// `ember vmm --config`, in that order of preference. It owns the VMM
// process, its state directory (API and vsock sockets, console, boot
// configuration) and the connection to the agent.
package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/client"
	"github.com/embervm/ember/shim/config"
	"github.com/embervm/ember/shim/network"
	"github.com/embervm/ember/shim/rootfs"
	vmmapi "github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
)

// Sentinel errors.
var (
	// ErrNoHotAttach: the VM has no spare drive slots (spare_drives = 0,
	// or a snapshot profile made without them), so it cannot take another
	// drive after it started.
	ErrNoHotAttach = errors.New("vm: the VM cannot take another drive")
	// ErrSkipped: a source does not apply (not configured, or cannot
	// serve this request).
	ErrSkipped = errors.New("vm: source skipped")
	// ErrDied: the VM ended.
	ErrDied = errors.New("vm: the VM is gone")
)

// Files in a VM's state directory.
const (
	apiSocket   = "api.sock"
	vsockSocket = "vsock.sock"
	consoleLog  = "console.log"
	vmmLog      = "vmm.log"
	bootConfig  = "boot.json"
	// PidFile holds the VMM's pid, so that a later `shim delete` can kill
	// it when the shim died.
	PidFile = "vmm.pid"
)

// GuestCID is the vsock context id of every ember VM (each has its own
// device, so they need not differ).
const GuestCID = 3

// Spec asks for a VM.
type Spec struct {
	// ID names the VM (the pod's sandbox id or the lone container's id).
	ID string
	// Dir is the VM's state directory (created by Start).
	Dir string
	// Config gives the kernel, initrd, size and sources.
	Config config.Config
	// Drives are the first container's: a cold boot gives them to the VM
	// in order (/dev/vda, ...), a restore attaches them to spare slots.
	// VM.Devices says where the guest sees them.
	Drives []rootfs.Drive
	// Network is the pod's CNI network, if it has one: the VM gets a
	// virtio-net interface on a TAP in the pod's namespace, connected to
	// the CNI interface, and the guest takes over its addresses. Only a
	// cold boot can give a VM an interface.
	Network *network.Pod
}

// Step is one timed step of getting a VM.
type Step struct {
	Name     string
	Duration time.Duration
	Err      error
}

// VM is a running VM with its agent connected.
type VM struct {
	ID  string
	Dir string
	// Source is "pool", "restore" or "boot".
	Source string
	// Steps are the timed steps that got the VM, failed sources included.
	Steps []Step

	cfg     config.Config
	cmd     *exec.Cmd // the VMM, when the shim started it
	pid     int
	vsock   string // the VM's vsock socket
	console string // the guest console's log
	// pidfd and claim: a VMM claimed from the pool (not the shim's child).
	pidfd   *os.File
	claim   *claimRecord
	api     *vmmapi.Client
	rpc     io.Closer
	agent   Agent
	devices []string // of Spec.Drives

	slotMu sync.Mutex
	slots  []string // per spare drive slot: the guest device, "" when free

	net *network.Pod // connected to the VM's TAP (see network.go)

	done     chan struct{}
	exitOnce sync.Once
	exitMu   sync.Mutex
	exitErr  error

	closeOnce sync.Once
}

// source is one way of getting a VM.
type source struct {
	name string
	get  func(ctx context.Context, spec Spec, v *VM) error
}

// Start gets a VM for spec, trying the configured sources in order, and
// connects to its agent.
func Start(ctx context.Context, spec Spec) (*VM, error) {
	if err := os.MkdirAll(spec.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("vm: %w", err)
	}
	var sources []source
	switch spec.Config.Backend {
	case config.BackendAuto:
		sources = []source{{"pool", claimPool}, {"restore", restoreSnapshot}, {"boot", coldBoot}}
	case config.BackendPool:
		sources = []source{{"pool", claimPool}}
	case config.BackendRestore:
		sources = []source{{"restore", restoreSnapshot}}
	default:
		sources = []source{{"boot", coldBoot}}
	}
	var steps []Step
	var errs []error
	for _, s := range sources {
		v := &VM{ID: spec.ID, Dir: spec.Dir, cfg: spec.Config, done: make(chan struct{}),
			vsock: filepath.Join(spec.Dir, vsockSocket), console: filepath.Join(spec.Dir, consoleLog)}
		t := time.Now()
		err := s.get(ctx, spec, v)
		steps = append(steps, Step{Name: s.name, Duration: time.Since(t), Err: err})
		if err == nil {
			inner := v.Steps
			v.Source, v.Steps = s.name, append(steps, inner...)
			log.G(ctx).WithField("vm", spec.ID).Infof("vm: served by %s in %v (steps: %s; of %s: %s)",
				s.name, time.Since(t).Round(time.Millisecond), formatSteps(steps), s.name, formatSteps(inner))
			return v, nil
		}
		v.Kill()
		if errors.Is(err, ErrSkipped) {
			log.G(ctx).WithField("vm", spec.ID).Debugf("vm: %s: %v", s.name, err)
		} else {
			log.G(ctx).WithField("vm", spec.ID).WithError(err).Warnf("vm: %s failed after %v", s.name, time.Since(t).Round(time.Millisecond))
		}
		errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
	}
	return nil, fmt.Errorf("vm: no source could start the VM: %w", errors.Join(errs...))
}

func formatSteps(steps []Step) string {
	var b bytes.Buffer
	for i, s := range steps {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %v", s.Name, s.Duration.Round(time.Millisecond))
		if s.Err != nil {
			fmt.Fprintf(&b, " (%v)", s.Err)
		}
	}
	return b.String()
}

// restoreSnapshot restores the configured snapshot profile (a snapshot of
// a VM booted with the agent and spare drive slots, `ember snapshot
// create`) in `ember vmm --restore`, attaches the drives to spare slots
// while it is paused, resumes it, re-identifies the agent (clock,
// entropy, Ready) and waits until the guest sees the drives.
func restoreSnapshot(ctx context.Context, spec Spec, v *VM) error {
	if spec.Config.SnapshotProfile == "" {
		return fmt.Errorf("%w: no snapshot_profile configured", ErrSkipped)
	}
	if spec.Network != nil {
		return fmt.Errorf("%w: %w", ErrSkipped, errNetworkNeedsBoot)
	}
	t := time.Now()
	if err := v.spawn(ctx, "--restore", spec.Config.SnapshotProfile, "--backend", "mmap",
		"--vsock-uds", filepath.Join(spec.Dir, vsockSocket), "--console", filepath.Join(spec.Dir, consoleLog)); err != nil {
		return err
	}
	v.Steps = append(v.Steps, Step{Name: "restore.vmm-ready", Duration: time.Since(t)})
	return v.attachAndResume(ctx, spec, "restore", "snapshot profile "+spec.Config.SnapshotProfile, fromSnapshot)
}

// attachAndResume attaches spec's drives to free spare slots of the
// paused, restored VM through the VMM's API, resumes it, connects to the
// agent (re-identifying it as origin needs) and waits until the guest sees
// the drives. step prefixes the step names; what names the VM's origin in
// errors.
func (v *VM) attachAndResume(ctx context.Context, spec Spec, step, what string, origin vmOrigin) error {
	slots, err := v.api.Drives(ctx)
	if err != nil {
		return fmt.Errorf("vm: drive slots: %w", err)
	}
	free := 0
	for _, s := range slots {
		if s.Path == "" {
			free++
		}
		v.slots = append(v.slots, s.Path) // an image in the snapshot holds its slot
	}
	if free < len(spec.Drives) {
		return fmt.Errorf("%w: %s has %d free spare drive slots, the container needs %d",
			ErrSkipped, what, free, len(spec.Drives))
	}
	type pending struct {
		slot int
		size uint64
	}
	var attached []pending
	for _, d := range spec.Drives {
		slot := -1
		for i, s := range v.slots {
			if s == "" {
				slot = i
				break
			}
		}
		size, err := imageSize(d.Path)
		if err != nil {
			return fmt.Errorf("vm: drive %s: %w", d.Path, err)
		}
		if err := v.api.AttachDrive(ctx, slot, vmmapi.DriveRequest{Path: d.Path, ReadOnly: d.ReadOnly}); err != nil {
			return fmt.Errorf("vm: attach %s to slot %d: %w", d.Path, slot, err)
		}
		v.slots[slot] = pendingSlot
		attached = append(attached, pending{slot, size})
	}
	t := time.Now()
	if err := v.api.Action(ctx, vmmapi.ActionResume); err != nil {
		return fmt.Errorf("vm: resume the VM (%s): %w", what, err)
	}
	v.Steps = append(v.Steps, Step{Name: step + ".resume", Duration: time.Since(t)})
	if err := v.connect(ctx, origin); err != nil {
		return err
	}
	t = time.Now()
	for _, a := range attached {
		dev, err := v.waitDisk(ctx, a.slot, a.size)
		if err != nil {
			return err
		}
		v.slots[a.slot] = dev
		v.devices = append(v.devices, dev)
	}
	v.Steps = append(v.Steps, Step{Name: step + ".disks", Duration: time.Since(t)})
	return nil
}

// coldBoot runs `ember vmm --config` and waits for the agent.
func coldBoot(ctx context.Context, spec Spec, v *VM) error {
	cfg := spec.Config
	bc := boot.Config{
		Kernel:    cfg.Kernel,
		Initrd:    cfg.Initrd,
		Cmdline:   cfg.KernelArgs,
		MemoryMiB: cfg.MemoryMiB,
		VCPUs:     cfg.VCPUs,
		RNG:       true,
		Vsock:     &boot.Vsock{GuestCID: GuestCID, UDS: filepath.Join(spec.Dir, vsockSocket)},
		// Later containers of the pod attach their rootfs to these.
		SpareDrives: cfg.SpareDrives,
	}
	for i, d := range spec.Drives {
		bc.Drives = append(bc.Drives, boot.Drive{Path: d.Path, ReadOnly: d.ReadOnly, ID: "ember" + strconv.Itoa(i)})
	}
	if n := spec.Network; n != nil {
		bc.Nets = []boot.NetInterface{{TAP: netTAP, GuestMAC: n.MAC.String(), NetNS: n.NetNS}}
	}
	b, err := json.MarshalIndent(bc, "", "  ")
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(spec.Dir, bootConfig)
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	t := time.Now()
	if err := v.spawn(ctx, "--config", cfgPath, "--console", filepath.Join(spec.Dir, consoleLog), "--start"); err != nil {
		return err
	}
	v.Steps = append(v.Steps, Step{Name: "boot.vmm-ready", Duration: time.Since(t)})
	for i := range spec.Drives {
		v.devices = append(v.devices, DevicePath(i))
	}
	v.slots = make([]string, cfg.SpareDrives)
	if err := v.connectNetwork(spec.Network); err != nil {
		return err
	}
	if err := v.connect(ctx, fromBoot); err != nil {
		return err
	}
	return v.configureGuestNetwork(ctx)
}

// spawn starts `ember vmm` with args and waits until its API serves.
func (v *VM) spawn(ctx context.Context, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(v.Dir, vmmLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer logf.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	defer readyR.Close()
	sock := filepath.Join(v.Dir, apiSocket)
	argv := append([]string{"vmm", "--id", v.ID, "--api-sock", sock, "--ready-fd", "3", "--linger", "0s"}, args...)
	cmd := exec.Command(v.cfg.Ember, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW}
	// Its own process group: signals meant for the shim do not reach it.
	// Its own, empty network namespace: the VMM needs none (its sockets
	// are Unix sockets, a pod's TAP is made in the pod's namespace), and
	// the VMM's pid is the tasks' pid, which tools such as ctr --cni
	// resolve to /proc/PID/ns/net: that must not be the host's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWNET}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("vm: start %s: %w", v.cfg.Ember, err)
	}
	v.cmd, v.pid = cmd, cmd.Process.Pid
	if err := writePidFile(v.Dir, v.pid); err != nil {
		return err
	}
	go func() {
		err := cmd.Wait()
		v.setExit(fmt.Errorf("%w: VMM process exited: %v%s", ErrDied, err, v.tail()))
	}()
	ready := make(chan error, 1)
	go func() {
		var b [16]byte
		n, err := readyR.Read(b[:])
		if err == nil && !bytes.HasPrefix(b[:n], []byte("ready")) {
			err = fmt.Errorf("unexpected %q", b[:n])
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			<-v.done
			return fmt.Errorf("vm: VMM did not become ready: %w", v.Err())
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	v.api = vmmapi.NewClient(sock)
	return nil
}

// writePidFile records the VMM's pid in dir.
func writePidFile(dir string, pid int) error {
	if err := os.WriteFile(filepath.Join(dir, PidFile), []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	return nil
}

// tail returns the end of the VMM's log and console, for error messages.
func (v *VM) tail() string {
	var out string
	for _, path := range []string{filepath.Join(v.Dir, vmmLog), v.console} {
		if path == "" {
			continue
		}
		name := filepath.Base(path)
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > 1500 {
			b = b[len(b)-1500:]
		}
		out += fmt.Sprintf("\n--- %s (tail) ---\n%s", name, b)
	}
	return out
}

// vmOrigin says what the agent needs to hear once connected.
type vmOrigin int

const (
	// fromBoot: a freshly booted guest; Ready.
	fromBoot vmOrigin = iota
	// fromSnapshot: a restored guest shares the snapshot's clock and
	// random state; SetTime, AddEntropy, then Ready.
	fromSnapshot
	// identified: a pooled VM whose VMM gave the agent the claim's
	// identity (clock, entropy, Ready) on resume; nothing more to say.
	identified
)

// connect dials the agent and tells it what origin needs: a restored VM's
// agent first gets the host's clock and fresh entropy (every restore of a
// snapshot would otherwise share the guest's random state), then Ready.
func (v *VM) connect(ctx context.Context, origin vmOrigin) error {
	t := time.Now()
	actx, cancel := context.WithTimeout(ctx, time.Duration(v.cfg.AgentTimeout))
	defer cancel()
	// Stop dialing if the VMM exits first.
	dctx, stop := context.WithCancel(actx)
	defer stop()
	go func() {
		select {
		case <-v.done:
			stop()
		case <-dctx.Done():
		}
	}()
	c, err := client.Dial(dctx, v.vsock, api.DefaultVsockPort)
	if err != nil {
		select {
		case <-v.done:
			err = fmt.Errorf("VMM exited before the agent answered: %w", err)
		default:
		}
		return fmt.Errorf("vm: %w%s", err, v.tail())
	}
	v.rpc = c
	v.agent = c
	v.Steps = append(v.Steps, Step{Name: "agent.connect", Duration: time.Since(t)})
	if origin == identified {
		return nil
	}
	t = time.Now()
	if origin == fromSnapshot {
		if _, err := v.agent.SetTime(actx, &api.SetTimeRequest{UnixNano: time.Now().UnixNano()}); err != nil {
			return fmt.Errorf("vm: agent set time: %w", err)
		}
		seed := make([]byte, 32)
		rand.Read(seed)
		if _, err := v.agent.AddEntropy(actx, &api.AddEntropyRequest{Data: seed}); err != nil {
			return fmt.Errorf("vm: agent add entropy: %w", err)
		}
	}
	if _, err := v.agent.Ready(actx, &api.ReadyRequest{VmId: v.ID}); err != nil {
		return fmt.Errorf("vm: agent ready: %w", err)
	}
	v.Steps = append(v.Steps, Step{Name: "agent.ready", Duration: time.Since(t)})
	return nil
}

func (v *VM) setExit(err error) {
	v.exitOnce.Do(func() {
		v.exitMu.Lock()
		v.exitErr = err
		v.exitMu.Unlock()
		close(v.done)
	})
}

// Agent is the connected agent.
func (v *VM) Agent() Agent { return v.agent }

// Pid is the VMM process's pid.
func (v *VM) Pid() int { return v.pid }

// Done is closed when the VM (its VMM process) has ended.
func (v *VM) Done() <-chan struct{} { return v.done }

// Err says why the VM ended (nil while it runs).
func (v *VM) Err() error {
	v.exitMu.Lock()
	defer v.exitMu.Unlock()
	return v.exitErr
}

// DevicePath is the guest device of the i-th drive given at boot.
func DevicePath(i int) string { return "/dev/vd" + string(rune('a'+i)) }

// Pause pauses the VM's vCPUs.
func (v *VM) Pause(ctx context.Context) error {
	if err := v.api.Action(ctx, vmmapi.ActionPause); err != nil {
		return fmt.Errorf("vm: pause: %w", err)
	}
	return nil
}

// Resume resumes the VM's vCPUs.
func (v *VM) Resume(ctx context.Context) error {
	if err := v.api.Action(ctx, vmmapi.ActionResume); err != nil {
		return fmt.Errorf("vm: resume: %w", err)
	}
	return nil
}

// Shutdown asks the agent to stop the containers and power off, waits for
// the VMM to exit (up to grace plus a margin) and kills it otherwise, then
// closes the connections. The state directory stays (see Cleanup).
func (v *VM) Shutdown(ctx context.Context, grace time.Duration) error {
	if v.agent != nil {
		sctx, cancel := context.WithTimeout(ctx, grace+2*time.Second)
		_, err := v.agent.Shutdown(sctx, &api.ShutdownRequest{GraceNs: int64(grace)})
		cancel()
		if err != nil {
			log.G(ctx).WithError(err).Debug("vm: agent shutdown")
		}
	}
	ended := v.done
	if v.claim != nil && v.api != nil {
		// A VMM from the pool lingers after its VM ends (for a last
		// /wait): the VM's end is what counts.
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		vmEnded := make(chan struct{})
		go func() { v.api.Wait(wctx); close(vmEnded) }()
		ended = vmEnded
	}
	select {
	case <-ended:
	case <-time.After(grace + 3*time.Second):
		log.G(ctx).Warn("vm: VMM did not exit after the agent's shutdown; killing it")
	}
	v.Kill()
	return nil
}

// Kill ends the VMM process at once and closes the connections. The state
// directory stays: it also holds container disks, removed by Cleanup.
func (v *VM) Kill() {
	v.closeOnce.Do(func() {
		if v.rpc != nil {
			v.rpc.Close()
		}
		if v.api != nil {
			v.api.Close()
		}
		switch {
		case v.cmd != nil:
			syscall.Kill(-v.pid, syscall.SIGKILL)
			select {
			case <-v.done:
			case <-time.After(5 * time.Second):
			}
		case v.pidfd != nil:
			v.killClaimed()
		}
		os.Remove(filepath.Join(v.Dir, PidFile))
		v.disconnectNetwork(context.Background())
	})
}

// Cleanup removes a VM's state directory, killing a VMM still recorded in
// its pid file (after a shim crash): the shim's own, or one claimed from
// the pool (ClaimFile), whose sockets in the pool's run directory go too.
// The console log is kept in StateDir/consoles when KeepConsole is set.
func Cleanup(dir string, cfg config.Config) {
	sock, claim := filepath.Join(dir, apiSocket), readClaim(dir)
	if claim != nil {
		sock = claim.Socket
	}
	if b, err := os.ReadFile(filepath.Join(dir, PidFile)); err == nil {
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && pid > 1 {
			killVMM(pid, sock)
		}
	}
	if claim != nil {
		claim.release(dir)
	}
	if cfg.KeepConsole {
		keep := filepath.Join(cfg.StateDir, "consoles")
		if os.MkdirAll(keep, 0o700) == nil {
			os.Rename(filepath.Join(dir, consoleLog), filepath.Join(keep, filepath.Base(dir)+".log"))
		}
	}
	os.RemoveAll(dir)
}

// killVMM kills pid and its process group if it still runs the ember VMM
// serving the API socket sock (the pid may have been reused). The signal
// goes through a pidfd opened before the check, so it cannot reach a
// process that took the pid after it.
func killVMM(pid int, sock string) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if !isVMM(pid, sock) {
		return
	}
	if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
}

// isVMM checks that pid runs an ember VMM serving the API socket sock.
func isVMM(pid int, sock string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, append([]byte(sock), 0))
}
