package pool

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/embervm/ember/vmm/api"
)

// entry is one VMM process the pool started.
type entry struct {
	id      string
	profile *profileState
	cmd     *exec.Cmd
	sock    string
	vsock   string   // the VM's vsock socket, if it has one
	console string   // the guest console's log, if the profile keeps one
	lease   *os.File // write end; 'c' hands the VMM over
	readyAt time.Time
	// client is the warmed-up API connection, kept for the claim.
	client  *api.Client
	exited  chan struct{} // closed when the process has been reaped
	exitErr error
}

// spawn starts `ember vmm` for p and waits until its API serves. A VMM
// started for the pool (warm) has its API warmed up before it is offered;
// one started for a waiting claim (a cold start) goes to the claim at once.
func (m *Manager) spawn(ctx context.Context, p *profileState, warm bool) (*entry, error) {
	id := newID()
	e := &entry{id: id, profile: p, sock: filepath.Join(m.cfg.RunDir, id+".sock"), exited: make(chan struct{})}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	leaseR, leaseW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return nil, err
	}
	args := []string{"vmm", "--api-sock", e.sock, "--id", id, "--ready-fd", "3", "--lease-fd", "4"}
	if p.Console {
		e.console = filepath.Join(m.cfg.RunDir, id+".console")
		args = append(args, "--console", e.console)
	}
	args = append(args, p.VMMArgs...)
	cmd := exec.Command(m.cfg.Ember, args...)
	cmd.ExtraFiles = []*os.File{readyW, leaseR}
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	// Its own process group: a terminal's ^C to the pool does not reach a
	// VMM that a client has claimed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if p.IsolateNetwork {
		// A claimer's tools may resolve the VMM's pid to its network
		// namespace (containerd reports it as a container's pid, and
		// ctr --cni configures /proc/PID/ns/net): that must not be the
		// host's.
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	err = cmd.Start()
	readyW.Close()
	leaseR.Close()
	if err != nil {
		leaseW.Close()
		return nil, fmt.Errorf("pool: start %s vmm: %w", m.cfg.Ember, err)
	}
	e.cmd, e.lease = cmd, leaseW
	go func() {
		e.exitErr = cmd.Wait()
		close(e.exited)
	}()

	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(readyR).ReadString('\n')
		if err != nil || line != "ready\n" {
			ready <- fmt.Errorf("pool: vmm %s exited before it was ready", id)
			return
		}
		ready <- nil
	}()
	timeout := time.Duration(m.cfg.StartTimeout)
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err = <-ready:
	case <-t.C:
		err = fmt.Errorf("pool: vmm %s not ready after %v", id, timeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		e.kill()
		<-e.exited
		if e.exitErr != nil {
			err = fmt.Errorf("%w (%v)", err, e.exitErr)
		}
		return nil, err
	}
	// A Linux VM's vsock socket is next to its API socket (ember vmm
	// --restore's default), made before the VMM reports ready.
	if fi, err := os.Lstat(e.sock + ".vsock"); err == nil && fi.Mode()&os.ModeSocket != 0 {
		e.vsock = e.sock + ".vsock"
	}
	if warm {
		e.warmUp(ctx)
	}
	e.readyAt = time.Now()
	return e, nil
}

// warmUp exercises the VMM's API once before the VMM is offered, so that
// a claim does not pay for the first touch of the API's code and heap in a
// fresh process (each first touch of a page costs tens of microseconds on
// hosts with shadow paging).
func (e *entry) warmUp(ctx context.Context) {
	e.client = api.NewClient(e.sock)
	for i := 0; i < 3; i++ {
		e.client.Info(ctx)
		e.client.Metrics(ctx)
	}
}

// handOver tells the VMM it now belongs to its claimer. A VMM that has
// taken an identity already counts itself claimed (ember vmm
// --lease-fd): the byte confirms it.
func (e *entry) handOver() error {
	_, err := e.lease.Write([]byte{'c'})
	e.lease.Close()
	return err
}

// kill ends an unclaimed VMM: closing the lease asks it to stop; SIGKILL
// follows if it lingers. It returns once the VMM has exited and its files
// are gone.
func (e *entry) kill() {
	if e.client != nil {
		e.client.Close()
	}
	e.lease.Close()
	select {
	case <-e.exited:
	case <-time.After(2 * time.Second):
		e.cmd.Process.Signal(syscall.SIGKILL)
		<-e.exited
	}
	e.removeFiles()
}

// discard ends a VMM whose claim failed at once.
func (e *entry) discard() {
	if e.client != nil {
		e.client.Close()
	}
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.lease.Close()
	<-e.exited
	e.removeFiles()
}

// removeFiles removes what a VMM that did not exit cleanly leaves in the
// run directory.
func (e *entry) removeFiles() { removeFiles(e.sock, e.vsock, e.console) }

func removeFiles(paths ...string) {
	for _, p := range paths {
		if p != "" {
			os.Remove(p)
		}
	}
}

func (e *entry) alive() bool {
	select {
	case <-e.exited:
		return false
	default:
		return true
	}
}
