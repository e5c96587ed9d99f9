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

// ServeLease hands the VM over through lease, a SOCK_SEQPACKET socket
// whose other end a supervisor (the warm pool) holds: it waits for one
// api.LeaseClaim, applies its identity, resumes the VM if asked and
// answers with an api.LeaseAnswer. Until then the API refuses state
// changes. If the supervisor closes the lease first, or the claim fails,
// lost is called (the VMM should end: nobody can claim it any more).
//
// The instance must be ready with StartPaused and must not have run. The
// claim is taken on the first vCPU's thread, which polls the lease
// itself (vmm.Machine.ResumeOn): a claim wakes one thread, which applies
// the identity and enters the guest.
func (in *Instance) ServeLease(ctx context.Context, f *os.File, lost func()) error {
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	f.Close()
	unix.CloseOnExec(fd)
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.started || !in.paused || in.ran {
		unix.Close(fd)
		return fmt.Errorf("%w: a lease needs a VM that waits paused and has not run", api.ErrConflict)
	}
	l := &lease{in: in, fd: fd, lost: lost, ctx: ctx, buf: make([]byte, maxLeaseMessage)}
	if in.hooks.PrepareIdentity != nil {
		if err := in.hooks.PrepareIdentity(); err != nil {
			unix.Close(fd)
			return fmt.Errorf("lease: prepare the identity: %w", err)
		}
	}
	// Make the vCPUs' first entry now (vmm.VCPU.Prime), not at the claim.
	if err := in.m.Prime(ctx); err != nil {
		unix.Close(fd)
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
		unix.Close(fd)
		return err
	}
	if err := in.m.ResumeOn(fd, l.claim); err != nil {
		unix.Close(fd)
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
	fd   int
	lost func()
	ctx  context.Context
	buf  []byte
}

// warmLeaseCodec decodes a made-up claim and encodes an answer.
func warmLeaseCodec() {
	b, _ := api.LeaseClaim{Resume: true, Identity: api.Identity{
		ID: "warm-up", Nonce: strings.Repeat("5a", 32), Time: time.Now(), MAC: "02:00:00:00:00:01", IP: "10.0.0.2/24"}}.AppendJSON(nil)
	c, _ := api.ParseLeaseClaim(b)
	hex.DecodeString(c.Identity.Nonce)
	api.LeaseAnswer{}.AppendJSON(b[:0])
}

// claim runs on the first vCPU's thread when the lease is readable. It
// reports whether the vCPUs should run now, and answers the claim once the
// vCPU's state says so (then).
func (l *lease) claim() (run bool, then func()) {
	in := l.in
	n, err := unix.Read(l.fd, l.buf)
	if err != nil || n == 0 {
		in.mu.Lock()
		in.leased = false
		in.mu.Unlock()
		unix.Close(l.fd)
		slog.Warn("supervisor went away before this VMM was claimed; stopping")
		l.lost()
		return false, nil
	}
	answer := func(err error) func() { return func() { l.answer(err) } }
	// A failed claim ends the VMM: the lease is spent, so nobody could
	// claim it again (the pool discards it anyway).
	fail := func(err error) func() { return func() { l.answer(err); l.lost() } }
	c, err := api.ParseLeaseClaim(l.buf[:n])
	if err != nil {
		return false, fail(fmt.Errorf("%w: malformed lease claim: %w", api.ErrBadRequest, err))
	}
	in.mu.Lock()
	if err := in.setIdentity(l.ctx, c.Identity); err != nil {
		in.mu.Unlock()
		return false, fail(err)
	}
	if !c.Resume {
		in.mu.Unlock()
		return false, answer(nil)
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
		return true, answer(nil)
	}
	// The rest needs the vCPUs running (a Linux guest's agent answers only
	// then): it goes on beside them.
	return true, func() {
		go func() { l.answer(in.hooks.AfterResume(l.ctx)) }()
	}
}

// answer sends the claim's outcome and lets go of the lease: from here on
// the claimer drives the VM through the API (until now, while the claim
// took effect, the API refused to change its state).
func (l *lease) answer(err error) {
	l.in.mu.Lock()
	l.in.leased = false
	l.in.mu.Unlock()
	var a api.LeaseAnswer
	if err != nil {
		a.Error = err.Error()
		a.Conflict = errors.Is(err, api.ErrConflict)
		slog.Warn("lease claim failed", "err", err)
	}
	b := a.AppendJSON(l.buf[:0])
	if _, werr := unix.Write(l.fd, b); werr != nil {
		slog.Warn("answering the lease claim", "err", werr)
	}
	unix.Close(l.fd)
}
