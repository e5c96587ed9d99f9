package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
// errNoDirect: it sends the claim to the profile's slots in the ready
// directory until a VMM answers or a slot does not exist. It starts at a
// random one of the first few slots, so that concurrent claimers spread
// over the ready VMMs instead of all trying slot 0 first (a VMM takes
// one claim and drops the others), and wraps around to 0.
func (c *Client) claimDirect(ctx context.Context, req ClaimRequest) (*Claim, error) {
	name, ok := readyDirName(req.Profile)
	if !ok || req.ViaDaemon {
		return nil, errNoDirect
	}
	if err := checkClaimID(req.ID); err != nil {
		return nil, err
	}
	t0 := time.Now()
	dc, err := newDirectClaim(req)
	if err != nil {
		return nil, err
	}
	defer dc.close()
	dir := c.ready + "/" + name + "/"
	start := rand.IntN(spreadSlots)
	slot, wrapped := start, start == 0
	for tries := 0; tries < maxSlots; tries++ {
		cl, err := dc.try(ctx, dir+strconv.Itoa(slot), t0)
		switch {
		case errors.Is(err, errNoSlot):
			if wrapped {
				return nil, errNoDirect
			}
			slot, wrapped = 0, true // the slots end before start
			continue
		case errors.Is(err, errVMMGone):
			slot++
			if wrapped && slot == start {
				return nil, errNoDirect
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("pool: claim: %w", err)
		}
		return cl, nil
	}
	return nil, errNoDirect
}

// spreadSlots is how many of the first slots a direct claim may start at.
const spreadSlots = 8

// directClaim is one direct claim's message and sockets, kept across the
// slots it tries.
type directClaim struct {
	req      ClaimRequest
	identity api.Identity
	msg      []byte
	send     int    // an unbound SOCK_DGRAM socket to send the claim from
	pair     [2]int // the answer's socket pair; pair[1] is passed along
	buf      [maxDirectAnswer]byte
}

func newDirectClaim(req ClaimRequest) (*directClaim, error) {
	// Without an id the VMM names the claim with its own (as the daemon
	// does), and says so in the answer.
	dc := &directClaim{req: req, identity: NewIdentity(req.ID), send: -1, pair: [2]int{-1, -1}}
	var err error
	if dc.msg, err = (api.LeaseClaim{Identity: dc.identity, Resume: req.Resume}).AppendJSON(nil); err != nil {
		return nil, err
	}
	if dc.send, err = unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return dc, nil
}

func (dc *directClaim) close() {
	for _, fd := range []int{dc.send, dc.pair[0], dc.pair[1]} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// try claims the VMM in the slot at path: one datagram, the claim,
// passing one end of a socket pair, on which the VMM answers.
func (dc *directClaim) try(ctx context.Context, path string, t0 time.Time) (*Claim, error) {
	if dc.pair[0] < 0 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
		dc.pair = fds
	}
	t1 := time.Now()
	var err error
	for {
		err = unix.Sendmsg(dc.send, dc.msg, unix.UnixRights(dc.pair[1]), &unix.SockaddrUnix{Name: path}, 0)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == unix.ECONNREFUSED:
		// The VMM took a claim (or ended) and closed its socket; the
		// daemon has not yet unlisted it. The pair was not passed: it
		// serves the next slot.
		return nil, errVMMGone
	case err != nil:
		// ENOENT: the slots end here. (Anything else, EACCES say: no
		// direct claims here either.)
		return nil, errNoSlot
	}
	// Passed: only the VMM holds that end now, so that this end sees it
	// close if the VMM drops the claim.
	unix.Close(dc.pair[1])
	fd := dc.pair[0]
	dc.pair = [2]int{-1, -1}
	cl, err := dc.answer(ctx, fd)
	if cl != nil {
		cl.Wait = t1.Sub(t0)
		cl.Identify = time.Since(t1)
		cl.Total = time.Since(t0)
	}
	return cl, err
}

// answer reads the VMM's answer on fd (and closes it). A context that
// ends shuts the socket down, which ends the read; the VMM, unable to
// answer, then ends itself.
func (dc *directClaim) answer(ctx context.Context, fd int) (*Claim, error) {
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
	b := dc.buf[:]
	n, err := unix.Read(fd, b)
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
	if a.PID <= 0 || a.Socket == "" || a.ID == "" || (dc.req.ID != "" && a.ID != dc.req.ID) {
		return nil, fmt.Errorf("the VMM's answer has no handover for claim %q: %s", dc.req.ID, b[:n])
	}
	cl := &Claim{ID: a.ID, PID: a.PID, Socket: a.Socket, Vsock: a.Vsock, Console: a.Console, Source: "pool", Identity: dc.identity}
	cl.Identity.ID = a.ID
	return cl, nil
}

// maxDirectAnswer bounds a VMM's answer to a direct claim (and the claim).
const maxDirectAnswer = 4096
