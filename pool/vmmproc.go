package pool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/api"
)

// entry is one VMM process the pool started.
type entry struct {
	id      string
	profile *profileState
	cmd     *exec.Cmd
	sock    string
	vsock   string // the VM's vsock socket, if it has one
	console string // the guest console's log, if the profile keeps one
	// lease is the pool's end of the VMM's lease socket (ember vmm
	// --lease-fd): the claim goes there, and closing it unclaimed ends
	// the VMM. It is read through the runtime's poller: a claim's
	// goroutine that blocked in a read of its own would hold one of the
	// daemon's Ps until sysmon took it back, and at 8 concurrent claims
	// on 2 CPUs the others' claims waited for that (first report at a
	// median 2.9 instead of 2.4 ms).
	lease *net.UnixConn
	// answer has the VMM's one message on the lease (see readLease), for
	// a claim the daemon sent; a notice of a direct claim goes to
	// Manager.directClaimed instead.
	answer chan leaseMessage
	// direct is the VMM's direct-claim socket in the ready directory
	// (ready.go) under its starting name, until it is listed in slot
	// (-1: none).
	direct string
	slot   int
	// claimedDirectly is closed when the VMM reports a direct claim.
	claimedDirectly chan struct{}
	readyAt         time.Time
	exited          chan struct{} // closed when the process has been reaped
	exitErr         error
}

// leaseMessage is what the pool read on a lease.
type leaseMessage struct {
	a   api.LeaseAnswer
	err error
}

// spawn starts `ember vmm` for p and waits until its API serves and it
// waits paused for its claim on the lease. A VMM started ahead of its
// claim (ahead) trims what it maps while it idles (ember vmm
// --idle-trim); a cold start's is claimed at once.
func (m *Manager) spawn(ctx context.Context, p *profileState, ahead bool) (*entry, error) {
	id := newID()
	e := &entry{id: id, profile: p, sock: filepath.Join(m.cfg.RunDir, id+".sock"), exited: make(chan struct{}),
		answer: make(chan leaseMessage, 1), slot: -1, claimedDirectly: make(chan struct{})}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyR.Close()
	lease, vmmLease, err := leasePair()
	if err != nil {
		readyW.Close()
		return nil, err
	}
	args := []string{"vmm", "--api-sock", e.sock, "--id", id, "--ready-fd", "3", "--lease-fd", "4"}
	extra := []*os.File{readyW, vmmLease}
	if ahead {
		args = append(args, "--idle-trim")
		if dir := m.profileReadyDir(p); dir != "" {
			ln, path, err := bindDirect(dir, id)
			if err != nil {
				readyW.Close()
				vmmLease.Close()
				lease.Close()
				return nil, err
			}
			e.direct = path
			extra = append(extra, ln)
			args = append(args, "--claim-fd", "5")
		}
	}
	if p.Console {
		e.console = filepath.Join(m.cfg.RunDir, id+".console")
		args = append(args, "--console", e.console)
	}
	args = append(args, p.VMMArgs...)
	cmd := exec.Command(m.cfg.Ember, args...)
	cmd.ExtraFiles = extra
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
	for _, f := range extra {
		f.Close()
	}
	if err != nil {
		lease.Close()
		removeFiles(e.direct)
		return nil, fmt.Errorf("pool: start %s vmm: %w", m.cfg.Ember, err)
	}
	e.cmd, e.lease = cmd, lease
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
	e.readyAt = time.Now()
	go m.readLease(e)
	return e, nil
}

// readLease reads the VMM's one message on the lease: the answer to the
// daemon's claim, for entry.claim, or the notice of a direct claim.
func (m *Manager) readLease(e *entry) {
	buf := make([]byte, 4096)
	n, err := e.lease.Read(buf)
	var msg leaseMessage
	switch {
	case err != nil:
		msg.err = err
	default:
		msg.a, msg.err = api.ParseLeaseAnswer(buf[:n])
		if msg.err != nil {
			msg.err = fmt.Errorf("malformed answer to the claim: %w", msg.err)
		}
	}
	if msg.err == nil && msg.a.Direct {
		m.directClaimed(e, msg.a)
		msg = leaseMessage{err: errClaimedDirectly}
	}
	e.answer <- msg
}

// errClaimedDirectly answers a claim the daemon sent a VMM that a direct
// claimer had claimed first.
var errClaimedDirectly = errors.New("the VMM was claimed directly")

// leasePair returns the two ends of a lease socket: the pool's, and the
// VMM's to inherit.
func leasePair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("pool: lease socket: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "lease")
	defer mine.Close()
	c, err := net.FileConn(mine)
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, fmt.Errorf("pool: lease socket: %w", err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "lease"), nil
}

// claim hands the VMM over through its lease: its identity, and a resume
// if asked. It returns once the VMM has answered (with resume: its vCPU is
// entering the guest), or ctx is done.
//
// sent is called once the claim is written (or could not be).
//
// If ctx ends first, the lease is left open: the VMM's answer, to come,
// tells whether it took this claim (see discardUnlessClaimedDirectly).
func (e *entry) claim(ctx context.Context, id api.Identity, resume bool, sent func()) error {
	b, err := api.LeaseClaim{Identity: id, Resume: resume}.AppendJSON(make([]byte, 0, 256))
	if err != nil {
		sent()
		return err
	}
	_, err = e.lease.Write(b)
	sent()
	if err != nil {
		// The VMM closed the lease: if it reported a direct claim
		// before, the report is still to be read.
		err = fmt.Errorf("send the claim: %w", err)
		select {
		case msg := <-e.answer:
			if errors.Is(msg.err, errClaimedDirectly) {
				err = msg.err
			}
		case <-e.exited:
		case <-ctx.Done():
		}
		e.lease.Close()
		return err
	}
	var msg leaseMessage
	select {
	case msg = <-e.answer:
	case <-ctx.Done():
		return ctx.Err()
	}
	e.lease.Close() // the VMM belongs to the claimer from here on
	if err := msg.err; err != nil {
		if errors.Is(err, errClaimedDirectly) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return errors.New("the VMM closed its lease without answering the claim")
		}
		return fmt.Errorf("read the claim's answer: %w", err)
	}
	a := msg.a
	if a.Error != "" {
		if a.Conflict {
			return fmt.Errorf("%w: %s", api.ErrConflict, a.Error)
		}
		return errors.New(a.Error)
	}
	return nil
}

// kill ends an unclaimed VMM: closing the lease asks it to stop; SIGKILL
// follows if it lingers. It returns once the VMM has exited and its files
// are gone, or once it reported that a direct claimer claimed it first
// (it is the claimer's: it is left running).
func (e *entry) kill() {
	// Shut the lease down for writing only: the VMM reads the end of it,
	// and the pool can still read its report of a direct claim.
	if rc, err := e.lease.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
	}
	select {
	case <-e.exited:
	case <-e.claimedDirectly:
		return
	case <-time.After(2 * time.Second):
		select {
		case <-e.claimedDirectly:
			return
		default:
		}
		e.cmd.Process.Signal(syscall.SIGKILL)
		<-e.exited
	}
	e.lease.Close()
	e.removeFiles()
}

// discardUnlessClaimedDirectly ends a VMM claimed for a claimer that
// gave up, once the VMM's answer shows that it took that claim (not a
// direct claimer's).
func (e *entry) discardUnlessClaimedDirectly() {
	select {
	case msg := <-e.answer:
		if errors.Is(msg.err, errClaimedDirectly) {
			return // the direct claimer's
		}
	case <-e.exited:
	}
	e.discard()
}

// discard ends a VMM whose claim failed at once.
func (e *entry) discard() {
	e.cmd.Process.Signal(syscall.SIGKILL)
	e.lease.Close()
	<-e.exited
	e.removeFiles()
}

// removeFiles removes what a VMM that did not exit cleanly leaves in the
// run directory.
func (e *entry) removeFiles() { removeFiles(e.sock, e.vsock, e.console, e.direct) }

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
