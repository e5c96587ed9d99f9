package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/embervm/ember/pool"
	"github.com/embervm/ember/shim/config"
	vmmapi "github.com/embervm/ember/vmm/api"
)

// ClaimFile records, in a VM's state directory, the VMM claimed from the
// warm pool (a claimRecord): it is not the shim's child and its sockets
// live in the pool's run directory, so a `shim delete` after a shim crash
// needs more than the pid to end it and clean up.
const ClaimFile = "vmm.claim"

// claimRecord is what ClaimFile holds.
type claimRecord struct {
	PID     int    `json:"pid"`
	Socket  string `json:"socket"`
	Vsock   string `json:"vsock,omitempty"`
	Console string `json:"console,omitempty"`
}

// maxClaimID bounds the id given to the pool: it becomes the guest's
// hostname (at most 64 bytes).
const maxClaimID = 63

// claimPool claims a paused VM from the warm pool (a restore of a
// snapshot profile, like restoreSnapshot's), attaches the drives to spare
// slots through the VMM's API while it is paused, resumes it (the VMM
// hands the claim's identity to the agent on resume: clock, entropy,
// Ready), connects to the agent and waits until the guest sees the drives.
//
// The claimed VMM is the pool's child, not the shim's: the VM holds a
// pidfd for it (its exit and Kill), and ClaimFile in the state directory
// lets Cleanup end it after a shim crash. Under backend "auto" an empty or
// unreachable pool is skipped (the next source serves); under "pool" the
// pool may start a VMM cold for the claim.
func claimPool(ctx context.Context, spec Spec, v *VM) error {
	cfg := spec.Config
	if cfg.PoolSocket == "" {
		return fmt.Errorf("%w: no pool_socket configured", ErrSkipped)
	}
	if spec.Network != nil {
		return fmt.Errorf("%w: %w", ErrSkipped, errNetworkNeedsBoot)
	}
	t := time.Now()
	id := spec.ID
	if len(id) > maxClaimID {
		id = id[:maxClaimID]
	}
	// The claim is not cancelled with ctx: the pool hands over a VMM once
	// it has identified it, and one whose claimer hung up is killed there.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(cfg.AgentTimeout))
	pc := pool.NewClient(cfg.PoolSocket)
	cl, err := pc.Claim(cctx, pool.ClaimRequest{
		Profile: cfg.PoolProfile, ID: id, NoCold: cfg.Backend != config.BackendPool,
	})
	pc.Close()
	cancel()
	switch {
	case errors.Is(err, pool.ErrEmpty), errors.Is(err, pool.ErrUnreachable), errors.Is(err, pool.ErrClosed):
		return fmt.Errorf("%w: %w", ErrSkipped, err)
	case err != nil:
		return fmt.Errorf("vm: claim from the pool at %s: %w", cfg.PoolSocket, err)
	}
	v.Steps = append(v.Steps, Step{Name: "pool.claim", Duration: time.Since(t)})
	if err := v.adopt(ctx, cl); err != nil {
		return err
	}
	log.G(ctx).WithField("vm", spec.ID).Infof("vm: claimed VMM %s (pid %d, %s) from pool profile %q in %v",
		cl.ID, cl.PID, cl.Source, cfg.PoolProfile, time.Since(t).Round(time.Millisecond))
	if cl.Vsock == "" {
		return fmt.Errorf("vm: pool profile %q gives VMs without a vsock socket, so no agent: it must restore a snapshot profile (--restore DIR)", cfg.PoolProfile)
	}
	// The VMM hands the claim's identity to the agent as it resumes
	// (clock, entropy, Ready), so the shim need not repeat it.
	return v.attachAndResume(ctx, spec, "pool", fmt.Sprintf("pool profile %q", cfg.PoolProfile), identified)
}

// adopt takes over a VMM claimed from the pool: a pidfd pins the process
// (its pid could otherwise be reused once the pool reaps it), ClaimFile
// and PidFile record it, and a goroutine watches for its exit.
func (v *VM) adopt(ctx context.Context, cl *pool.Claim) error {
	rec := &claimRecord{PID: cl.PID, Socket: cl.Socket, Vsock: cl.Vsock, Console: cl.Console}
	fd, err := unix.PidfdOpen(cl.PID, unix.PIDFD_NONBLOCK)
	if err != nil {
		// Nobody else will end it or clean up after it: the pool let go
		// of it with the claim.
		killVMM(cl.PID, cl.Socket)
		rec.release(v.Dir)
		return fmt.Errorf("%w: the claimed VMM (pid %d): %w", ErrDied, cl.PID, err)
	}
	// The pidfd refers to whatever has the pid now: make sure that is the
	// claimed VMM and not a successor.
	if !isVMM(cl.PID, cl.Socket) {
		unix.Close(fd)
		rec.release(v.Dir) // what the exited VMM left in the pool's run directory
		return fmt.Errorf("%w: the claimed VMM (pid %d) exited before it was adopted", ErrDied, cl.PID)
	}
	v.pidfd = os.NewFile(uintptr(fd), "pidfd")
	v.pid, v.vsock, v.console = cl.PID, cl.Vsock, cl.Console
	v.claim = rec
	v.api = vmmapi.NewClient(cl.Socket)
	go v.watchPidfd()
	b, _ := json.Marshal(v.claim)
	if err := os.WriteFile(filepath.Join(v.Dir, ClaimFile), b, 0o600); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	if err := writePidFile(v.Dir, v.pid); err != nil {
		return err
	}
	if sameNetNS(cl.PID) {
		log.G(ctx).Warnf("vm: the pool's VMM %d shares the host's network namespace; containerd reports its pid as the containers' (set \"isolate_network\": true in the pool profile)", cl.PID)
	}
	return nil
}

// watchPidfd waits until the claimed VMM exits.
func (v *VM) watchPidfd() {
	rc, err := v.pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, _ := unix.Poll(p, 0)
			return n > 0
		})
	}
	if err != nil {
		v.setExit(fmt.Errorf("%w: lost track of the VMM (pid %d, claimed from the pool): %v", ErrDied, v.pid, err))
		return
	}
	v.setExit(fmt.Errorf("%w: the VMM process (pid %d, claimed from the pool) exited%s", ErrDied, v.pid, v.tail()))
}

// killClaimed ends a claimed VMM through its pidfd, waits for its exit,
// keeps its console as the state directory's and removes what it left in
// the pool's run directory.
func (v *VM) killClaimed() {
	if rc, err := v.pidfd.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0) })
	}
	select {
	case <-v.done:
	case <-time.After(5 * time.Second):
	}
	v.pidfd.Close()
	v.claim.release(v.Dir)
}

// release moves a claimed VMM's console into dir (where Cleanup finds it)
// and removes its sockets and ClaimFile.
func (c *claimRecord) release(dir string) {
	if c.Console != "" {
		if err := os.Rename(c.Console, filepath.Join(dir, consoleLog)); err != nil {
			os.Remove(c.Console)
		}
	}
	for _, p := range []string{c.Socket, c.Vsock} {
		if p != "" {
			os.Remove(p)
		}
	}
	os.Remove(filepath.Join(dir, ClaimFile))
}

// readClaim reads dir's ClaimFile (nil if there is none).
func readClaim(dir string) *claimRecord {
	b, err := os.ReadFile(filepath.Join(dir, ClaimFile))
	if err != nil {
		return nil
	}
	var c claimRecord
	if json.Unmarshal(b, &c) != nil || c.Socket == "" {
		return nil
	}
	return &c
}

// sameNetNS reports whether pid is in this process's network namespace.
func sameNetNS(pid int) bool {
	var a, b unix.Stat_t
	if unix.Stat("/proc/self/ns/net", &a) != nil || unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}
