package pool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/api"
)

// The client's side of a direct claim (ready.go): take a ready VMM from
// the ready directory and claim it on its own socket, without the daemon
// in the claim's path (which costs a claim the daemon's wake-up and work:
// about 0.15 ms of 0.7 on the development hosts).

// errNoDirect: no ready VMM could be claimed directly (none listed, no
// ready directory, a daemon without one): claim through the daemon.
var errNoDirect = errors.New("pool: no VMM to claim directly")

// errVMMGone: the VMM in a slot did not take the claim: it was claimed
// (or ended) before, or took another claim first. The claimer tries the
// next slot.
var errVMMGone = errors.New("pool: the VMM in the slot is gone")

// errNoSlot: the slot does not exist: there are no more ready VMMs.
var errNoSlot = errors.New("pool: no such slot")

// claimDirect claims a ready VMM of req's profile directly, or returns
// errNoDirect: it sends the claim to slot 0, 1, ... of the profile's ready
// directory until a VMM answers or a slot does not exist.
func (c *Client) claimDirect(ctx context.Context, req ClaimRequest) (*Claim, error) {
	name, ok := readyDirName(req.Profile)
	if !ok || req.ViaDaemon {
		return nil, errNoDirect
	}
	if err := checkClaimID(req.ID); err != nil {
		return nil, err
	}
	t0 := time.Now()
	dir := c.ready + "/" + name + "/"
	for slot := 0; slot < maxSlots; slot++ {
		cl, err := claimSlot(ctx, dir+strconv.Itoa(slot), req, t0)
		switch {
		case errors.Is(err, errNoSlot):
			return nil, errNoDirect
		case errors.Is(err, errVMMGone):
			continue
		case err != nil:
			return nil, fmt.Errorf("pool: claim: %w", err)
		}
		return cl, nil
	}
	return nil, errNoDirect
}

// claimSlot claims the VMM in the slot at path: one datagram, the claim,
// passing one end of a socket pair, on which the VMM answers.
func claimSlot(ctx context.Context, path string, req ClaimRequest, t0 time.Time) (*Claim, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	fd := pair[0]
	// A context that ends shuts the socket down, which ends a blocked
	// read; the VMM, unable to answer, then ends itself.
	var mu sync.Mutex
	closed := false
	stop := func() bool { return true }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			mu.Lock()
			if !closed {
				unix.Shutdown(fd, unix.SHUT_RDWR)
			}
			mu.Unlock()
		})
	}
	defer func() {
		stop()
		mu.Lock()
		closed = true
		unix.Close(fd)
		mu.Unlock()
	}()
	// Without an id the VMM names the claim with its own (as the daemon
	// does), and says so in the answer.
	cl := &Claim{Source: "pool", Identity: NewIdentity(req.ID)}
	var b [maxDirectAnswer]byte
	msg, err := api.LeaseClaim{Identity: cl.Identity, Resume: req.Resume}.AppendJSON(b[:0])
	if err != nil {
		unix.Close(pair[1])
		return nil, err
	}
	t1 := time.Now()
	cl.Wait = t1.Sub(t0)
	err = sendClaim(path, msg, pair[1])
	unix.Close(pair[1])
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, errNoSlot
	case err != nil:
		// ECONNREFUSED: the VMM took a claim (or ended) and closed its
		// socket; the daemon has not yet unlisted it.
		return nil, errVMMGone
	}
	n, err := unix.Read(fd, b[:])
	if err != nil || n == 0 {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err == nil || err == unix.ECONNRESET {
			// Dropped: the VMM took another claim first (or ended)
			// and closed its socket, with this claim in it.
			return nil, errVMMGone
		}
		return nil, fmt.Errorf("read the claim's answer: %w", err)
	}
	a, err := api.ParseLeaseAnswer(b[:n])
	if err != nil {
		return nil, fmt.Errorf("malformed answer to the claim: %w", err)
	}
	if a.Error != "" {
		if a.Conflict {
			return nil, fmt.Errorf("%w: %s", api.ErrConflict, a.Error)
		}
		return nil, errors.New(a.Error)
	}
	if a.PID <= 0 || a.Socket == "" || a.ID == "" || (req.ID != "" && a.ID != req.ID) {
		return nil, fmt.Errorf("the VMM's answer has no handover for claim %q: %s", req.ID, b[:n])
	}
	cl.ID, cl.Identity.ID = a.ID, a.ID
	cl.PID, cl.Socket, cl.Vsock, cl.Console = a.PID, a.Socket, a.Vsock, a.Console
	cl.Identify = time.Since(t1)
	cl.Total = time.Since(t0)
	return cl, nil
}

// sendClaim sends msg to the direct-claim socket at path, passing answer.
func sendClaim(path string, msg []byte, answer int) error {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	for {
		err = unix.Sendmsg(s, msg, unix.UnixRights(answer), &unix.SockaddrUnix{Name: path}, 0)
		if err != unix.EINTR {
			return err
		}
	}
}

// maxDirectAnswer bounds a VMM's answer to a direct claim (and the claim).
const maxDirectAnswer = 4096
