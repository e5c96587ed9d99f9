package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/embervm/ember/vmm/api"
)

// Sentinel errors.
var (
	ErrUnknownProfile = errors.New("pool: unknown profile")
	ErrClosed         = errors.New("pool: closed")
	// ErrEmpty: a claim that refused a cold start found no ready VM.
	ErrEmpty = errors.New("pool: no ready VM")
	// ErrUnreachable: the client could not reach the pool daemon.
	ErrUnreachable = errors.New("pool: daemon unreachable")
	// ErrBadRequest: a claim the pool refuses as given (a bad id).
	ErrBadRequest = errors.New("pool: bad claim request")
)

// profileState is a profile's live state. Its fields are guarded by the
// Manager's mutex.
type profileState struct {
	Profile
	ready []*entry // oldest first
	// slots are the ready directory's slots (ready.go): the VMMs listed
	// there, ready or claimed and not yet unlisted.
	slots    []*entry
	starting int
	// target is how many VMs to keep: Size, or fewer after idle reaping
	// until the next claim.
	target int
	// counters
	claimed, cold, failed, reaped int
	direct                        int // of claimed: claimed directly (ready.go)
	kick                          chan struct{}
}

// Manager keeps the pool.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	profiles map[string]*profileState
	closed   bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New validates cfg, creates the run directory and starts filling the pool
// in the background.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Ember == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Ember = exe
	}
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, log: log, profiles: map[string]*profileState{}, ctx: ctx, cancel: cancel}
	for _, p := range cfg.Profiles {
		ps := &profileState{Profile: p, target: p.Size, kick: make(chan struct{}, 1)}
		m.profiles[p.Name] = ps
	}
	if err := m.makeReadyDirs(); err != nil {
		cancel()
		return nil, err
	}
	for _, ps := range m.profiles {
		m.wg.Add(1)
		go m.keep(ps)
	}
	return m, nil
}

// poke wakes a profile's keeper.
func (ps *profileState) poke() {
	select {
	case ps.kick <- struct{}{}:
	default:
	}
}

// room reports whether another VM of ps fits the limits. Called with m.mu.
func (m *Manager) room(ps *profileState) bool {
	if len(ps.ready)+ps.starting >= ps.target {
		return false
	}
	var vms int
	var mem uint64
	for _, p := range m.profiles {
		n := len(p.ready) + p.starting
		vms += n
		mem += uint64(n) * p.MemoryMiB
	}
	max := m.cfg.MaxVMs
	if max == 0 {
		for _, p := range m.profiles {
			max += p.Size
		}
	}
	if vms >= max {
		return false
	}
	return m.cfg.MemoryBudgetMiB == 0 || mem+ps.MemoryMiB <= m.cfg.MemoryBudgetMiB
}

// keep fills ps up to its size, replaces crashed VMs and reaps idle ones.
func (m *Manager) keep(ps *profileState) {
	defer m.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	delay := time.Duration(m.cfg.RefillDelay)
	if delay == 0 {
		delay = 100 * time.Millisecond
	}
	for {
		m.fill(ps)
		select {
		case <-m.ctx.Done():
			return
		case <-ps.kick:
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-m.ctx.Done():
					return
				}
			}
		case <-tick.C:
			m.sweep(ps)
		}
	}
}

// fill starts VMs one at a time until ps is full or a start fails.
func (m *Manager) fill(ps *profileState) {
	for {
		m.mu.Lock()
		if m.closed || !m.room(ps) {
			m.mu.Unlock()
			return
		}
		ps.starting++
		m.mu.Unlock()

		e, err := m.spawn(m.ctx, ps, true)

		m.mu.Lock()
		ps.starting--
		if err != nil {
			ps.failed++
			m.mu.Unlock()
			if m.ctx.Err() == nil {
				m.log.Error("pool: starting a VMM failed", "profile", ps.Name, "err", err)
				// Back off instead of spinning on a broken profile.
				select {
				case <-time.After(time.Second):
				case <-m.ctx.Done():
				}
			}
			return
		}
		if m.closed {
			m.mu.Unlock()
			e.kill()
			return
		}
		if err := m.list(ps, e); err != nil {
			ps.failed++
			m.mu.Unlock()
			m.log.Error("pool: listing a ready VMM failed", "profile", ps.Name, "err", err)
			e.kill()
			return
		}
		ps.ready = append(ps.ready, e)
		m.mu.Unlock()
		go m.watchReady(e)
	}
}

// watchReady notices a ready VMM that dies before it is claimed.
func (m *Manager) watchReady(e *entry) {
	<-e.exited
	ps := e.profile
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unlist(ps, e)
	if removeEntry(&ps.ready, e) {
		e.removeFiles()
		if !m.closed {
			ps.failed++
			m.log.Warn("pool: a ready VMM died; replacing it", "profile", ps.Name, "id", e.id, "err", e.exitErr)
			ps.poke()
		}
	}
}

// removeEntry removes e from list and reports whether it was there.
func removeEntry(list *[]*entry, e *entry) bool {
	i := slices.Index(*list, e)
	if i >= 0 {
		*list = slices.Delete(*list, i, i+1)
	}
	return i >= 0
}

// directClaimed takes note of a VMM's report that it was claimed directly
// (a, from its lease): it is the claimer's from now on, or, if the
// claim failed, it ends itself.
func (m *Manager) directClaimed(e *entry, a api.LeaseAnswer) {
	ps := e.profile
	close(e.claimedDirectly)
	m.mu.Lock()
	removeEntry(&ps.ready, e)
	m.unlist(ps, e)
	if a.Error == "" {
		ps.claimed++
		ps.direct++
	} else {
		ps.failed++
	}
	closed := m.closed
	m.mu.Unlock()
	e.lease.Close()
	if a.Error != "" {
		m.log.Warn("pool: a direct claim failed; the VMM ends", "profile", ps.Name, "id", e.id, "err", a.Error)
		go func() {
			<-e.exited
			e.removeFiles()
		}()
	}
	if !closed {
		ps.poke()
	}
}

// sweep reaps VMs idle longer than the profile's IdleTimeout.
func (m *Manager) sweep(ps *profileState) {
	if ps.IdleTimeout == 0 {
		return
	}
	var idle []*entry
	m.mu.Lock()
	keep := ps.ready[:0]
	for _, e := range ps.ready {
		if time.Since(e.readyAt) > time.Duration(ps.IdleTimeout) {
			idle = append(idle, e)
		} else {
			keep = append(keep, e)
		}
	}
	ps.ready = keep
	if len(idle) > 0 {
		// Reaped VMs are not replaced until the next claim.
		ps.target = len(keep) + ps.starting
	}
	m.mu.Unlock()
	for _, e := range idle {
		m.log.Info("pool: reaping idle VMM", "profile", ps.Name, "id", e.id)
		e.kill()
		m.mu.Lock()
		m.unlist(ps, e)
		select {
		case <-e.claimedDirectly: // claimed meanwhile
		default:
			ps.reaped++
		}
		m.mu.Unlock()
	}
}

// ClaimOptions tune a claim.
type ClaimOptions struct {
	// ID names the claimed VM (default: the VMM's id).
	ID string
	// Resume resumes the VM before Claim returns. Without it the VM waits
	// paused for the claimer, who may attach drives through the VMM's API
	// first and then resumes it there.
	Resume bool
	// NoCold makes a claim that finds no ready VM fail with ErrEmpty
	// instead of starting a VMM cold, for claimers that have a fallback of
	// their own.
	NoCold bool

	// sent, if set, is called once, as soon as the claim is on its way
	// to a VMM or has failed before that: from there on the claim waits,
	// and the daemon does its deferred work (its next accept).
	sent func()
}

// claimSent calls o.sent, if set.
func (o ClaimOptions) claimSent() {
	if o.sent != nil {
		o.sent()
	}
}

// Claim is a handed-over VM. From the claim on, the VMM belongs to the
// claimer: the pool neither reaps nor kills it, not even on Close, and the
// claimer ends it (through its API, or by PID: the VMM runs in its own
// process group and is the pool's child, so a claimer that is not should
// signal it through a pidfd) and removes what it leaves in the run
// directory when killed (Socket, Vsock, Console).
type Claim struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
	// Socket is the VMM's control API (vmm/api).
	Socket string `json:"socket"`
	// Vsock is the VM's vsock Unix socket (Linux VMs with a vsock
	// device; CONNECT <port> reaches the guest), "" if it has none.
	Vsock string `json:"vsock,omitempty"`
	// Console is the guest console's log file, for profiles with
	// Console set.
	Console string `json:"console,omitempty"`
	// Source is "pool" for a ready VM, "cold" for the fallback start.
	Source   string       `json:"source"`
	Identity api.Identity `json:"identity"`
	// Timings of the claim's steps: as the daemon timed them, or for a
	// direct claim as the client did (Wait until the claim was sent to
	// the VMM that took it, Identify from there to its answer).
	Wait     time.Duration `json:"wait_ns"`     // to get a VMM (pop, or cold start)
	Identify time.Duration `json:"identify_ns"` // to re-identify (and, when asked, resume) it
	Total    time.Duration `json:"total_ns"`
}

// Claim hands over a VM of the named profile.
func (m *Manager) Claim(ctx context.Context, profile string, opts ClaimOptions) (*Claim, error) {
	c, refill, err := m.claim(ctx, profile, opts)
	refill()
	return c, err
}

// claim is Claim without starting the refill: the caller calls refill
// once it has sent the answer, so that the replacement VMM's start (a
// process start and a restore) does not compete with the answer for a
// CPU.
func (m *Manager) claim(ctx context.Context, profile string, opts ClaimOptions) (c *Claim, refill func(), err error) {
	refill = func() {}
	t0 := time.Now()
	if err := checkClaimID(opts.ID); err != nil {
		return nil, refill, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, refill, ErrClosed
	}
	ps, ok := m.profiles[profile]
	if !ok {
		m.mu.Unlock()
		return nil, refill, fmt.Errorf("%w: %q", ErrUnknownProfile, profile)
	}
	ps.target = ps.Size // refill after idle reaping
	m.mu.Unlock()
	// The refill is poked once the claimed VM runs and its claimer has
	// the answer: earlier, the keeper's thread and the replacement VMM
	// would compete with the claim for a CPU.
	refill = ps.poke
	for {
		e := m.popReady(ps)
		if e == nil && opts.NoCold {
			return nil, refill, fmt.Errorf("%w for profile %q", ErrEmpty, profile)
		}
		c = &Claim{Source: "pool"}
		if e == nil {
			opts.claimSent() // a cold start takes milliseconds
			c.Source = "cold"
			m.log.Info("pool: no ready VM; cold start", "profile", profile)
			var err error
			if e, err = m.spawn(ctx, ps, false); err != nil {
				return nil, refill, fmt.Errorf("pool: cold start for profile %q: %w", profile, err)
			}
		}
		c.Wait = time.Since(t0)
		c.ID, c.PID, c.Socket, c.Vsock, c.Console = e.id, e.cmd.Process.Pid, e.sock, e.vsock, e.console
		if opts.ID != "" {
			c.ID = opts.ID
		}
		t1 := time.Now()
		c.Identity = NewIdentity(c.ID)
		err := e.claim(ctx, c.Identity, opts.Resume, opts.claimSent)
		if errors.Is(err, errClaimedDirectly) {
			continue // a direct claimer was first: the next one
		}
		if err != nil {
			if ctx.Err() != nil {
				go e.discardUnlessClaimedDirectly()
			} else {
				e.discard()
			}
			return nil, refill, fmt.Errorf("pool: claim %s: %w", e.id, err)
		}
		c.Identify = time.Since(t1)
		c.Total = time.Since(t0)
		m.mu.Lock()
		ps.claimed++
		if c.Source == "cold" {
			ps.cold++
		}
		m.mu.Unlock()
		refill = func() {
			m.mu.Lock()
			m.unlist(ps, e)
			m.mu.Unlock()
			ps.poke()
		}
		return c, refill, nil
	}
}

// popReady takes the oldest live ready VMM of ps off its ready list (it
// stays listed for direct claimers until its claim: whichever claim it
// takes first wins), or returns nil.
func (m *Manager) popReady(ps *profileState) *entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(ps.ready) > 0 {
		e := ps.ready[0]
		ps.ready = ps.ready[1:]
		if e.alive() {
			return e
		}
	}
	return nil
}

// maxClaimID bounds a claim's id: it becomes the guest's hostname (at
// most 64 bytes in Linux).
const maxClaimID = 64

// checkClaimID refuses an id that cannot name the VM: longer than
// maxClaimID or with bytes beyond letters, digits, '.', '_' and '-'
// (container and sandbox ids fit).
func checkClaimID(id string) error {
	if len(id) > maxClaimID {
		return fmt.Errorf("%w: id of %d bytes, at most %d", ErrBadRequest, len(id), maxClaimID)
	}
	if !nameChars(id) {
		return fmt.Errorf("%w: id %q: only letters, digits, '.', '_' and '-'", ErrBadRequest, id)
	}
	return nil
}

// nameChars reports whether s has only letters, digits, '.', '_' and '-'
// (claim ids, and profile names that can name a ready directory).
func nameChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// abandon ends a VMM claimed for a claimer that went away before it got
// the answer. The VMM is the pool's child (its pid cannot be reused before
// the pool reaps it).
func (m *Manager) abandon(c *Claim) {
	m.log.Warn("pool: the claimer went away; ending the VMM claimed for it", "id", c.ID, "pid", c.PID)
	syscall.Kill(c.PID, syscall.SIGKILL)
	removeFiles(c.Socket, c.Vsock, c.Console)
}

// ProfileStatus counts a profile's VMs.
type ProfileStatus struct {
	Name     string `json:"name"`
	Size     int    `json:"size"`
	Ready    int    `json:"ready"`
	Starting int    `json:"starting"`
	Claimed  int    `json:"claimed"`
	// Direct counts the claims, of Claimed, that claimers made directly
	// (ReadyDir), without the daemon.
	Direct int `json:"direct"`
	Cold   int `json:"cold"`
	Failed int `json:"failed"`
	Reaped int `json:"reaped"`
}

// Status returns every profile's counts.
func (m *Manager) Status() []ProfileStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ProfileStatus
	for _, p := range m.cfg.Profiles {
		ps := m.profiles[p.Name]
		out = append(out, ProfileStatus{Name: p.Name, Size: ps.target, Ready: len(ps.ready), Starting: ps.starting,
			Claimed: ps.claimed, Direct: ps.direct, Cold: ps.cold, Failed: ps.failed, Reaped: ps.reaped})
	}
	return out
}

// Close stops filling, ends every unclaimed VMM and waits for them.
// Claimed VMMs belong to their claimers and keep running.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var all []*entry
	for _, ps := range m.profiles {
		all = append(all, ps.ready...)
		ps.ready = nil
	}
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	var wg sync.WaitGroup
	for _, e := range all {
		wg.Add(1)
		go func() { defer wg.Done(); e.kill() }()
	}
	wg.Wait()
	m.removeReadyDirs()
	// Leave the run directory if claimed VMMs still have sockets there.
	os.Remove(m.cfg.RunDir)
	return nil
}

// ReadyPIDs returns the pids of the ready (unclaimed) VMMs.
func (m *Manager) ReadyPIDs() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []int
	for _, ps := range m.profiles {
		for _, e := range ps.ready {
			out = append(out, e.cmd.Process.Pid)
		}
	}
	return out
}
