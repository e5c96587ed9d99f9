// Package poolbench measures the warm pool against a cold restore of the
// same snapshot, in the same run: the latency from a client's claim to the
// claimed VM's first guest instruction after resume, at several
// concurrency levels, and the memory an idle pooled VMM costs beyond its
// guest memory.
//
// Both sources go through one `ember pool serve` process, as a client
// would use it: the "pool" profile keeps Concurrency restored VMMs ready;
// the "cold" profile keeps none, so each of its claims starts a fresh
// `ember vmm --restore` of the same snapshot with the same backend. Rounds
// of the sources alternate. The pool is measured three ways: as
// pool.Client.Claim claims, directly from a ready VMM (a new client per
// claim, as the containerd shim and `ember pool claim` claim), and through
// the daemon (ClaimRequest.ViaDaemon), over a connection the client keeps
// (a long-lived claimer) and over a new one per claim. A claim's latency
// is measured in the client, from the claim (with resume) to its answer,
// which comes once the VMM has applied the identity and its vCPU thread
// is entering the guest (KVM_RUN), and to the guest's first report (the
// VMM's timestamp). Every claimed guest then runs to its end and its
// result, computed from the snapshot's memory and registers and the
// identity it was given, is checked.
package poolbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/embervm/ember/benchmarks/vmcore"
	"github.com/embervm/ember/pool"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/kvm"
)

// ErrBench reports a benchmark run that could not measure what it should.
var ErrBench = errors.New("poolbench")

// Options configure a run.
type Options struct {
	// Ember is the ember binary.
	Ember string
	// Backend is the restore backend of both sources (default prefetch).
	Backend snapshot.Backend
	// MemoryMiB of the test guest (default 64).
	MemoryMiB uint64
	// FillPercent is the share of guest memory the guest filled before
	// the snapshot and sums after the claim (default 2: about 1.2 MiB of
	// 64 MiB, a few hundred microseconds of guest work after the claim, so
	// that claimed guests do not hold the CPUs while the other claims of
	// a round are measured).
	FillPercent float64
	// Runs is how many claims to measure per source and concurrency.
	Runs int
	// Concurrency levels to measure (default 1 and 8).
	Concurrency []int
	// Baseline, if set, is another ember binary (an earlier version)
	// whose own pool daemon and VMMs are measured in the same run, in
	// rounds interleaved with the others, as SourceBaseline and
	// SourceBaselineFresh.
	Baseline string
}

func (o *Options) defaults() {
	if o.Backend == "" {
		o.Backend = snapshot.BackendPrefetch
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 64
	}
	if o.FillPercent == 0 {
		o.FillPercent = 2
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1, 8}
	}
	if o.Runs <= 0 {
		o.Runs = 30
	}
}

// Row is one measured configuration.
type Row struct {
	Source      string // SourcePool, SourcePoolFresh, SourceBaseline, SourceBaselineFresh or SourceCold
	Concurrency int
	// Stats of the client-measured claim latency: from sending the claim
	// to having the answer.
	Stats vmcore.Stats
	// Running is from sending the claim to the guest's first report to
	// its VMM (a port write a few instructions after it resumed).
	Running vmcore.Stats
	// Daemon is the same claims as the pool daemon timed them (Claim.Total),
	// Get its part to get a VMM (pop a ready one, or start one cold) and
	// Identify its part to apply the identity and resume.
	Daemon, Get, Identify vmcore.Stats
}

// Report is the result of Run.
type Report struct {
	Options Options
	Rows    []Row
	// Idle is the memory of an idle pooled VMM (medians); its guest part
	// is the working set the prefetch backend installed while it waited.
	Idle vmmMemory
	// WorkingSetPages is the size of the snapshot's working set.
	WorkingSetPages uint64
}

// Run creates a snapshot of an identity test guest, records its working
// set with one claim, and measures.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	dir, err := os.MkdirTemp("", "ember-poolbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	g, err := guestrun.NewIdentityGuest(o.MemoryMiB<<20, o.FillPercent)
	if err != nil {
		return nil, err
	}
	snapDir := filepath.Join(dir, "snap")
	if err := createSnapshot(ctx, snapDir, g); err != nil {
		return nil, err
	}
	b := &bench{o: o, guest: g, snapDir: snapDir, dir: dir}
	if err := b.prepare(ctx); err != nil {
		return nil, err
	}
	rep := &Report{Options: o}
	for _, conc := range o.Concurrency {
		if err := b.measure(ctx, conc, rep); err != nil {
			return nil, err
		}
	}
	if snap, err := snapshot.Open(snapDir); err == nil {
		if ws, err := snapshot.ReadWorkingSet(snap); err == nil {
			rep.WorkingSetPages = ws.Pages()
		}
	}
	return rep, nil
}

func createSnapshot(ctx context.Context, dir string, g *guestrun.IdentityGuest) error {
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	_, err = guestrun.Create(ctx, sys, dir, g.Spec)
	return err
}

type bench struct {
	o       Options
	guest   *guestrun.IdentityGuest
	snapDir string
	dir     string
}

// daemon is a running `ember pool serve`.
type daemon struct {
	cmd    *exec.Cmd
	client *pool.Client
	sock   string
	runDir string
	log    *os.File
	exited chan error
}

func (b *bench) startDaemon(ctx context.Context, conc int, ember, name string) (*daemon, error) {
	d := &daemon{runDir: filepath.Join(b.dir, fmt.Sprintf("run%s%d", name, conc)), exited: make(chan error, 1)}
	args := []string{"--restore", b.snapDir, "--backend", string(b.o.Backend)}
	cfg := pool.Config{
		Ember: ember, RunDir: d.runDir,
		Profiles: []pool.Profile{
			{Name: "pool", Size: conc, MemoryMiB: b.o.MemoryMiB, VMMArgs: args},
			{Name: "cold", Size: 0, MemoryMiB: b.o.MemoryMiB, VMMArgs: args},
		},
	}
	cfgPath := filepath.Join(b.dir, fmt.Sprintf("pool%s%d.json", name, conc))
	if err := writeJSON(cfgPath, cfg); err != nil {
		return nil, err
	}
	sock := filepath.Join(b.dir, fmt.Sprintf("pool%s%d.sock", name, conc))
	var err error
	if d.log, err = os.Create(filepath.Join(b.dir, fmt.Sprintf("pool%s%d.log", name, conc))); err != nil {
		return nil, err
	}
	d.cmd = exec.Command(ember, "pool", "serve", "--config", cfgPath, "--socket", sock)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		d.log.Close()
		return nil, err
	}
	go func() { d.exited <- d.cmd.Wait() }()
	d.client, d.sock = pool.NewClient(sock), sock
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.client.Status(ctx); err == nil {
			return d, nil
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("%w: pool daemon did not serve: %s", ErrBench, d.logTail())
		}
		select {
		case err := <-d.exited:
			d.exited <- err
			d.stop()
			return nil, fmt.Errorf("%w: pool daemon exited (%v): %s", ErrBench, err, d.logTail())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log.Name())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop ends the daemon (SIGTERM: it ends its unclaimed VMMs).
func (d *daemon) stop() {
	d.client.Close()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.log.Close()
}

// waitReady waits until the pool profile has n ready VMs, then lets the
// host settle.
func (d *daemon) waitReady(ctx context.Context, n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := d.client.Status(ctx)
		if err != nil {
			return err
		}
		if st[0].Ready >= n && st[0].Starting == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: pool not ready: %+v\n%s", ErrBench, st, d.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(50 * time.Millisecond):
		return nil
	}
}

// round claims conc VMs of profile at once and returns the client-side
// and daemon-side latencies. Every claimed guest is then run to its end
// and its result checked. With fresh, each claim is made by a new
// client, over a new connection.
func (b *bench) round(ctx context.Context, d *daemon, profile string, conc int, fresh, viaDaemon bool) (client, running []time.Duration, claims []*pool.Claim, err error) {
	claims = make([]*pool.Claim, conc)
	took := make([]time.Duration, conc)
	sent := make([]time.Time, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	for i := range conc {
		wg.Go(func() {
			c := d.client
			if fresh {
				c = pool.NewClient(d.sock)
				defer c.Close()
			}
			sent[i] = time.Now()
			claims[i], errs[i] = c.Claim(ctx, pool.ClaimRequest{Profile: profile, Resume: true, ViaDaemon: viaDaemon})
			took[i] = time.Since(sent[i])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, nil, err
	}
	// Leave the claimed guests alone until they have reported (the VMM
	// timestamps the report): asking their VMMs at once would wake
	// their API servers beside the guests' first instructions, and a
	// claim whose answer arrives sooner would be disturbed more.
	time.Sleep(settle)
	want := "pool"
	if profile == "cold" {
		want = "cold"
	}
	for i, c := range claims {
		if c.Source != want {
			err = errors.Join(err, fmt.Errorf("%w: a %s claim came from %s", ErrBench, profile, c.Source))
		}
		first, cerr := b.finish(ctx, c)
		if cerr != nil {
			err = errors.Join(err, cerr)
		}
		client = append(client, took[i])
		if !first.IsZero() {
			running = append(running, first.Sub(sent[i]))
		}
	}
	return client, running, claims, err
}

// settle is how long a round waits after its claims before it talks to
// the claimed VMMs (their guests report within a millisecond or two).
const settle = 5 * time.Millisecond

// finish waits for a claimed guest's end, checks what it computed, waits
// for its VMM to exit and returns when the guest first reported.
func (b *bench) finish(ctx context.Context, c *pool.Claim) (time.Time, error) {
	cl := api.NewClient(c.Socket)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	first, err := b.firstReport(ctx, cl)
	if err != nil {
		return first, fmt.Errorf("%w: claimed VM %s: %w", ErrBench, c.ID, err)
	}
	return first, b.check(ctx, cl, c)
}

// firstReport returns when the claimed guest first reported to its VMM,
// or the zero time if its VMM does not tell (an earlier ember).
func (b *bench) firstReport(ctx context.Context, cl *api.Client) (time.Time, error) {
	for {
		m, err := cl.Metrics(ctx)
		if err != nil {
			return time.Time{}, err
		}
		if !m.FirstReportAt.IsZero() {
			return m.FirstReportAt, nil
		}
		if info, err := cl.Info(ctx); err != nil || info.State == api.StateStopped {
			return time.Time{}, err // it ended without saying
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("the guest never reported: %w", ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

func (b *bench) check(ctx context.Context, cl *api.Client, c *pool.Claim) error {
	ei, err := cl.Wait(ctx)
	if err != nil {
		return fmt.Errorf("%w: claimed VM %s: %w", ErrBench, c.ID, err)
	}
	if ei.Error != "" {
		return fmt.Errorf("%w: claimed VM %s failed: %s", ErrBench, c.ID, ei.Error)
	}
	if err := b.guest.Check(ei.Reports, c.Identity.Nonce); err != nil {
		return fmt.Errorf("claimed VM %s: %w", c.ID, err)
	}
	for syscall.Kill(c.PID, 0) == nil {
		if ctx.Err() != nil {
			syscall.Kill(c.PID, syscall.SIGKILL)
			return fmt.Errorf("%w: claimed VMM %d did not exit after its guest ended", ErrBench, c.PID)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// prepare makes one cold claim before any VMM is pooled: with the
// prefetch backend it records the working set (saved when its VMM exits),
// which every later restore installs, and it brings the snapshot into the
// page cache for both sources alike.
func (b *bench) prepare(ctx context.Context) error {
	d, err := b.startDaemon(ctx, 0, b.o.Ember, "")
	if err != nil {
		return err
	}
	defer d.stop()
	_, _, _, err = b.round(ctx, d, "cold", 1, false, false)
	return err
}

// Sources, as named in Row.Source.
const (
	SourcePool          = "pool"
	SourceDaemon        = "pool through the daemon"
	SourceDaemonFresh   = "pool through the daemon, new connection per claim"
	SourceBaseline      = "pool (baseline)"
	SourceBaselineFresh = "pool (baseline), new connection per claim"
	SourceCold          = "cold restore"
)

// source is one kind of claim measure alternates.
type source struct {
	name    string
	d       *daemon
	profile string
	// fresh: a new client, so a new connection to the daemon, per claim;
	// viaDaemon: claim through the daemon even when a ready VM could be
	// claimed directly (pool.ClaimRequest.ViaDaemon).
	fresh, viaDaemon bool

	client, running []time.Duration
	claims          []*pool.Claim
}

// measure runs alternating rounds of conc claims of each source until
// each has o.Runs samples.
func (b *bench) measure(ctx context.Context, conc int, rep *Report) error {
	d, err := b.startDaemon(ctx, conc, b.o.Ember, "")
	if err != nil {
		return err
	}
	defer d.stop()
	sources := []*source{
		{name: SourcePool, d: d, profile: "pool", fresh: true},
		{name: SourceDaemon, d: d, profile: "pool", viaDaemon: true},
		{name: SourceDaemonFresh, d: d, profile: "pool", fresh: true, viaDaemon: true},
	}
	if b.o.Baseline != "" {
		base, err := b.startDaemon(ctx, conc, b.o.Baseline, "base")
		if err != nil {
			return err
		}
		defer base.stop()
		// Through its daemon, as its own client claimed: an earlier
		// daemon may list no ready VMMs, and a direct attempt there would
		// only add failed sends to its claims.
		sources = append(sources, &source{name: SourceBaseline, d: base, profile: "pool", viaDaemon: true},
			&source{name: SourceBaselineFresh, d: base, profile: "pool", fresh: true, viaDaemon: true})
	}
	sources = append(sources, &source{name: SourceCold, d: d, profile: "cold"})
	ready := func() error {
		for _, s := range sources {
			if s.profile == "pool" {
				if err := s.d.waitReady(ctx, conc); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for {
		done := true
		for _, s := range sources {
			done = done && len(s.client) >= b.o.Runs
		}
		if done {
			break
		}
		for _, s := range sources {
			if err := ready(); err != nil {
				return err
			}
			if rep.Idle.RSS == 0 {
				rep.Idle = idleRSS(d.runDir)
			}
			c, r, cl, err := b.round(ctx, s.d, s.profile, conc, s.fresh, s.viaDaemon)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			s.client, s.running, s.claims = append(s.client, c...), append(s.running, r...), append(s.claims, cl...)
		}
	}
	for _, s := range sources {
		rep.Rows = append(rep.Rows, newRow(s.name, conc, s.client, s.running, s.claims))
	}
	return nil
}

func newRow(source string, conc int, client, running []time.Duration, claims []*pool.Claim) Row {
	var total, get, identify []time.Duration
	for _, c := range claims {
		total, get, identify = append(total, c.Total), append(get, c.Wait), append(identify, c.Identify)
	}
	return Row{Source: source, Concurrency: conc, Stats: vmcore.Summarize(client), Running: vmcore.Summarize(running),
		Daemon: vmcore.Summarize(total), Get: vmcore.Summarize(get), Identify: vmcore.Summarize(identify)}
}
