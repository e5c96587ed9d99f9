package vmmproc

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/kvm"
)

// errLeased refuses the API's state changes while a supervisor holds the
// VM: it changes hands only through the lease.
var errLeased = fmt.Errorf("%w: the VM is held by its supervisor (the warm pool) until claimed there", api.ErrConflict)

// maxLeaseMessage bounds a LeaseClaim.
const maxLeaseMessage = 16 << 10

// LeaseOptions add a direct-claim socket to a lease.
type LeaseOptions struct {
	// Direct, if set, is a bound SOCK_DGRAM socket where a claimer can
	// claim the VMM without its supervisor in between: it sends one
	// datagram, an api.LeaseClaim with a connected SOCK_SEQPACKET socket
	// passed along (SCM_RIGHTS), and is answered there with an
	// api.LeaseAnswer that carries Handover. (A datagram wakes the VMM
	// once, with the claim; a connection would wake it to accept, and
	// again when the claim arrives.) The first claim, here or on the
	// lease, gets the VMM: taking it closes this socket, which drops any
	// other claim sent here (its claimer sees the socket it passed close,
	// and claims elsewhere); the supervisor is told on the lease
	// (api.LeaseAnswer.Direct), which also answers a claim it sent there
	// meanwhile.
	Direct *os.File
	// Handover is what a direct claimer is told about the VMM: PID,
	// Socket, Vsock and Console.
	Handover api.LeaseAnswer
}

// ServeLease hands the VM over through lease, a SOCK_SEQPACKET socket
// whose other end a supervisor (the warm pool) holds: it waits for one
// api.LeaseClaim, applies its identity, resumes the VM if asked and
// answers with an api.LeaseAnswer. Until then the API refuses state
// changes. If the supervisor closes the lease first, or the claim fails,
// lost is called (the VMM should end: nobody can claim it any more).
// With opts.Direct the claim may come from a claimer there instead.
//
// The instance must be ready with StartPaused and must not have run. The
// claim is taken on the first vCPU's thread, which polls the lease
// itself (vmm.Machine.ResumeOn): a claim wakes one thread, which applies
// the identity and enters the guest.
func (in *Instance) ServeLease(ctx context.Context, f *os.File, lost func(), opts LeaseOptions) error {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	f.Close()
	unix.CloseOnExec(fd)
	l := &lease{in: in, fd: fd, direct: -1, lost: lost, ctx: ctx, buf: make([]byte, maxLeaseMessage), handover: opts.Handover}
	if opts.Direct != nil {
		if err := l.listen(opts.Direct); err != nil {
			l.closeAll()
			return err
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.started || !in.paused || in.ran {
		l.closeAll()
		return fmt.Errorf("%w: a lease needs a VM that waits paused and has not run", api.ErrConflict)
	}
	if in.hooks.PrepareIdentity != nil {
		if err := in.hooks.PrepareIdentity(); err != nil {
			l.closeAll()
			return fmt.Errorf("lease: prepare the identity: %w", err)
		}
	}
	// Make the vCPUs' first entry now (vmm.VCPU.Prime), not at the claim.
	if err := in.m.Prime(ctx); err != nil {
		l.closeAll()
		return err
	}
	// Run the claim's decoding and answering once, on the thread that will
	// take the claim, so that the claim does not pay for the first touch
	// of that code, of the message buffer and of the thread's stack in this
	// fresh process (each first touch of a page costs tens of microseconds
	// on hosts with shadow paging).
	err = in.m.VCPUs()[0].Do(ctx, func(*kvm.VCPU) error {
		warmLeaseCodec()
		for i := 0; i < len(l.buf); i += 4096 {
			l.buf[i] = 0 // fault the buffer in now, not when the claim lands
		}
		return nil
	})
	if err != nil {
		l.closeAll()
		return err
	}
	if err := in.m.ResumeOnAny(l.triggers(), l.claim); err != nil {
		l.closeAll()
		return err
	}
	in.leased = true
	return nil
}

// checkLeased refuses a change to a VM its supervisor still holds.
func (in *Instance) checkLeased() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.leased {
		return errLeased
	}
	return nil
}

type lease struct {
	in   *Instance
	fd   int // the lease
	lost func()
	ctx  context.Context
	buf  []byte

	// direct is the direct-claim socket, -1 without one (or once it is
	// closed).
	direct   int
	oob      []byte // a direct claim's control message
	handover api.LeaseAnswer
	id       string // the claim's, once taken
}

// listen adds the direct-claim socket f.
func (l *lease) listen(f *os.File) error {
	fd, err := unix.Dup(int(f.Fd()))
	f.Close()
	if err != nil {
		return fmt.Errorf("direct-claim socket: %w", err)
	}
	unix.CloseOnExec(fd)
	l.direct = fd
	l.oob = make([]byte, unix.CmsgSpace(4*maxPassedFDs))
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("direct-claim socket: %w", err)
	}
	return nil
}

// triggers are the sockets the vCPU thread polls for the claim.
func (l *lease) triggers() []int {
	if l.direct < 0 {
		return []int{l.fd}
	}
	return []int{l.fd, l.direct}
}

// closeDirect closes the direct-claim socket (a claim was taken: a claim
// sent there later is refused).
func (l *lease) closeDirect() {
	if l.direct >= 0 {
		unix.Close(l.direct)
		l.direct = -1
	}
}

func (l *lease) closeAll() {
	l.closeDirect()
	unix.Close(l.fd)
}

// warmLeaseCodec decodes a made-up claim and encodes an answer.
func warmLeaseCodec() {
	b, _ := api.LeaseClaim{Resume: true, Identity: api.Identity{
		ID: "warm-up", Nonce: strings.Repeat("5a", 32), Time: time.Now(), MAC: "02:00:00:00:00:01", IP: "10.0.0.2/24"}}.AppendJSON(nil)
	c, _ := api.ParseLeaseClaim(b)
	hex.DecodeString(c.Identity.Nonce)
	api.LeaseAnswer{}.AppendJSON(b[:0])
}

// claim runs on the first vCPU's thread when the lease (or the
// direct-claim socket) is readable. It reports whether the vCPUs should
// run now, and answers the claim once the vCPU's state says so (then).
func (l *lease) claim() (run bool, then func()) {
	if l.direct >= 0 {
		if run, then, ok := l.claimDirect(); ok {
			return run, then
		}
	}
	in := l.in
	flags := 0
	if l.direct >= 0 {
		flags = unix.MSG_DONTWAIT // the wake-up may have been for the other socket
	}
	n, _, err := unix.Recvfrom(l.fd, l.buf, flags)
	if err == unix.EAGAIN || err == unix.EINTR {
		return false, l.rearm
	}
	if err != nil || n == 0 {
		in.mu.Lock()
		in.leased = false
		in.mu.Unlock()
		l.closeAll()
		slog.Warn("supervisor went away before this VMM was claimed; stopping")
		l.lost()
		return false, nil
	}
	l.closeDirect()
	return l.take(l.buf[:n], false, l.answer)
}

// rearm waits for the claim again, after a wake-up that brought none.
func (l *lease) rearm() {
	if err := l.in.m.ResumeOnAny(l.triggers(), l.claim); err != nil {
		slog.Warn("waiting for the claim again", "err", err)
		l.closeAll()
		l.lost()
	}
}

// claimDirect takes a claim on the direct-claim socket, if one is there
// (ok): a datagram with the claim and, passed with it, the socket to
// answer on. Taking it closes the socket, which drops any other claim
// sent there: their claimers see the sockets they passed close, and claim
// elsewhere.
func (l *lease) claimDirect() (run bool, then func(), ok bool) {
	for {
		n, oobn, _, _, err := unix.Recvmsg(l.direct, l.buf, l.oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false, nil, false // none
		case err != nil:
			slog.Warn("direct-claim socket failed; claims come through the lease only", "err", err)
			l.closeDirect()
			return false, nil, false
		}
		cfd := passedFD(l.oob[:oobn])
		if cfd < 0 {
			slog.Warn("ignoring a direct claim without a socket to answer on")
			continue
		}
		l.closeDirect()
		run, then = l.take(l.buf[:n], true, func(err error) { l.answerDirect(cfd, err) })
		return run, then, true
	}
}

// maxPassedFDs bounds the descriptors a direct claim's datagram may carry
// (it should carry one; any more are closed).
const maxPassedFDs = 4

// passedFD returns the one descriptor passed in a datagram's control
// message oob, -1 if there is not exactly one (every passed descriptor
// but the one returned is closed).
func passedFD(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1
	}
	var fds []int
	for _, m := range msgs {
		if got, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1
	}
	return fds[0]
}

// take applies the claim in msg and reports whether the vCPUs should run
// now; answer tells the claimer how it went, once the vCPU's state says so
// (then). A direct claim without an id is named by the VMM's id (the
// answer says so).
func (l *lease) take(msg []byte, direct bool, answer func(error)) (run bool, then func()) {
	in := l.in
	ok := func(err error) func() { return func() { answer(err) } }
	// A failed claim ends the VMM: the lease is spent, so nobody could
	// claim it again (the pool discards it anyway).
	fail := func(err error) func() { return func() { answer(err); l.lost() } }
	c, err := api.ParseLeaseClaim(msg)
	if err != nil {
		return false, fail(fmt.Errorf("%w: malformed lease claim: %w", api.ErrBadRequest, err))
	}
	if direct && c.Identity.ID == "" {
		c.Identity.ID = in.id
	}
	in.mu.Lock()
	if err := in.setIdentity(l.ctx, c.Identity); err != nil {
		in.mu.Unlock()
		return false, fail(err)
	}
	l.id = c.Identity.ID
	if !c.Resume {
		in.mu.Unlock()
		return false, ok(nil)
	}
	if in.hooks.BeforeStart != nil {
		if err := in.hooks.BeforeStart(l.ctx); err != nil {
			in.mu.Unlock()
			return false, fail(err)
		}
	}
	in.ran, in.paused = true, false
	in.mu.Unlock()
	if in.hooks.AfterResume == nil {
		return true, ok(nil)
	}
	// The rest needs the vCPUs running (a Linux guest's agent answers only
	// then): it goes on beside them.
	return true, func() {
		go func() { answer(in.hooks.AfterResume(l.ctx)) }()
	}
}

// answer sends the claim's outcome and lets go of the lease: from here on
// the claimer drives the VM through the API (until now, while the claim
// took effect, the API refused to change its state).
func (l *lease) answer(err error) {
	l.release()
	a := answerFor(err)
	b := a.AppendJSON(l.buf[:0])
	if _, werr := unix.Write(l.fd, b); werr != nil {
		slog.Warn("answering the lease claim", "err", werr)
	}
	unix.Close(l.fd)
}

// answerDirect answers a direct claimer on cfd with the outcome and the
// handover, then tells the supervisor on the lease. If the claimer hung
// up, nobody owns the VMM: it ends.
func (l *lease) answerDirect(cfd int, err error) {
	l.release()
	a := answerFor(err)
	if err == nil {
		a.ID = l.id
		a.PID, a.Socket, a.Vsock, a.Console = l.handover.PID, l.handover.Socket, l.handover.Vsock, l.handover.Console
	}
	b := a.AppendJSON(l.buf[:0])
	_, werr := unix.Write(cfd, b)
	notice := api.LeaseAnswer{Direct: true, ID: l.id}
	switch {
	case err != nil:
		notice.Error = err.Error()
	case werr != nil:
		notice.Error = "the direct claimer went away before its answer: " + werr.Error()
	}
	if notice.Error == "" {
		// The supervisor's work on the notice (unlisting, refilling) and
		// the close would compete for the CPUs with the guest's first
		// instructions: they wait a moment.
		time.AfterFunc(noticeDelay, func() {
			unix.Close(cfd)
			l.notify(notice)
		})
		return
	}
	unix.Close(cfd)
	l.notify(notice)
	if werr != nil && err == nil {
		slog.Warn(notice.Error + "; stopping")
		l.lost()
	}
}

// noticeDelay is how long after answering a direct claim the VMM tells
// its supervisor.
const noticeDelay = 2 * time.Millisecond

// notify tells the supervisor of a direct claim. The lease stays open
// (its supervisor closes it): closed with a claim the supervisor sent
// meanwhile unread, the supervisor would read a reset instead of this.
func (l *lease) notify(a api.LeaseAnswer) {
	b := a.AppendJSON(l.buf[:0])
	unix.Write(l.fd, b) // a supervisor that is gone needs no notice
}

// release ends the lease's hold on the API.
func (l *lease) release() {
	l.in.mu.Lock()
	l.in.leased = false
	l.in.mu.Unlock()
}

func answerFor(err error) api.LeaseAnswer {
	var a api.LeaseAnswer
	if err != nil {
		a.Error = err.Error()
		a.Conflict = errors.Is(err, api.ErrConflict)
		slog.Warn("lease claim failed", "err", err)
	}
	return a
}
