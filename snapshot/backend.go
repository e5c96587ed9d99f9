package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/memory"
)

// Backend is how a restored guest's memory gets the snapshot's content.
type Backend string

// Memory backends.
const (
	// BackendCopy reads the memory file's data into anonymous memory before
	// the guest runs (holes are skipped: anonymous memory is zero).
	BackendCopy Backend = "copy"
	// BackendMmap maps the memory file privately: pages come from the page
	// cache on first touch and writes are copy-on-write, never reaching
	// the file.
	BackendMmap Backend = "mmap"
	// BackendUFFD serves each first touch from a userfaultfd handler: one
	// page read from the file (UFFDIO_COPY), or a zero page for holes
	// (UFFDIO_ZEROPAGE) with no read at all.
	BackendUFFD Backend = "uffd"
	// BackendPrefetch is BackendUFFD plus a working set: when the snapshot
	// directory holds one, it is installed in bulk as the guest starts;
	// when it does not, the pages the guest faults on are recorded so that
	// SaveWorkingSet can write one.
	BackendPrefetch Backend = "prefetch"
)

// Backends lists every backend.
var Backends = []Backend{BackendCopy, BackendMmap, BackendUFFD, BackendPrefetch}

// ParseBackend returns the backend called s.
func ParseBackend(s string) (Backend, error) {
	for _, b := range Backends {
		if string(b) == s {
			return b, nil
		}
	}
	return "", fmt.Errorf("%w: %q (want copy, mmap, uffd or prefetch)", ErrBackend, s)
}

// MemoryOptions tune OpenMemory.
type MemoryOptions struct {
	Backend Backend
	// Record makes the uffd backend record the working set too (prefetch
	// records whenever it has no working set to install).
	Record bool
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Stats describe what a restore's memory backend did so far.
type Stats struct {
	Backend Backend
	// Setup is how long OpenMemory took (for copy: the whole read).
	Setup time.Duration
	// FaultsServed counts userfaultfd page faults the handler answered.
	FaultsServed uint64
	// BytesRead counts bytes read from the memory file by ember (copy,
	// uffd, prefetch; page-cache reads behind mmap are not counted).
	BytesRead uint64
	// PagesZeroFilled counts pages installed as zero pages without a read.
	PagesZeroFilled uint64
	// PagesPrefetched counts pages the prefetcher installed.
	PagesPrefetched uint64
	// WorkingSetPages is the size of the installed working set (prefetch).
	WorkingSetPages uint64
	// Recording reports whether faults are being recorded.
	Recording bool
}

// Memory is a restored guest's memory: host mappings holding (or serving)
// a snapshot's memory file, and, for uffd and prefetch, the handler that
// serves them. Close it after the machine that uses it.
type Memory struct {
	snap    *Snapshot
	opts    MemoryOptions
	log     *slog.Logger
	file    *os.File
	maps    []mapping
	guest   *memory.Guest
	stats   counters
	setup   time.Duration
	wsPages uint64

	srv      *faultServer // uffd and prefetch
	access   *populatingAccessor
	prefetch *prefetcher // prefetch with a working set
	cancel   context.CancelFunc
}

// OpenMemory builds guest memory for a full snapshot with the chosen
// backend. For uffd and prefetch, faults are served from the moment it
// returns; prefetching (if any) starts at StartPrefetch.
func OpenMemory(ctx context.Context, snap *Snapshot, opts MemoryOptions) (_ *Memory, err error) {
	t0 := time.Now()
	if _, err := ParseBackend(string(opts.Backend)); err != nil {
		return nil, err
	}
	if snap.State.Kind != KindFull {
		return nil, fmt.Errorf("%w: cannot restore diff %s; merge it onto its base first", ErrDiff, snap.State.ID)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Memory{snap: snap, opts: opts, log: log.With("backend", opts.Backend)}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()
	// O_RDONLY: no backend can modify the snapshot.
	if m.file, err = os.Open(snap.MemoryPath()); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	size := int64(snap.State.MemorySize())
	if fi, err := m.file.Stat(); err != nil || fi.Size() != size {
		return nil, fmt.Errorf("%w: memory file changed size since Open", ErrTruncated)
	}
	for _, r := range snap.State.Regions {
		var host []byte
		if opts.Backend == BackendMmap {
			host, err = mapFile(m.file, int64(r.FileOffset), r.Size)
		} else {
			host, err = mapAnon(r.Size)
		}
		if err != nil {
			return nil, err
		}
		m.maps = append(m.maps, mapping{host: host, addr: addrOf(host), fileOff: r.FileOffset})
	}
	switch opts.Backend {
	case BackendCopy:
		if err := m.copyIn(ctx); err != nil {
			return nil, err
		}
	case BackendUFFD, BackendPrefetch:
		if err := m.startUFFD(ctx, size); err != nil {
			return nil, err
		}
	}
	var regions []*memory.Region
	for i, mp := range m.maps {
		r, err := memory.NewRegionFromMapping(snap.State.Regions[i].GPA, mp.host)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		regions = append(regions, r)
	}
	if m.guest, err = memory.New(regions...); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	m.setup = time.Since(t0)
	return m, nil
}

// copyIn reads every data extent of the memory file into the mappings.
func (m *Memory) copyIn(ctx context.Context) error {
	data, err := dataExtents(m.file, int64(m.snap.State.MemorySize()))
	if err != nil {
		return err
	}
	for _, x := range data {
		for off, end := x.Offset, x.Offset+x.Length; off < end; {
			if err := ctx.Err(); err != nil {
				return err
			}
			mp := m.mappingAt(off)
			if mp == nil {
				return fmt.Errorf("%w: data at %#x outside every region", ErrCorrupt, off)
			}
			rel := off - mp.fileOff
			n := min(end-off, uint64(len(mp.host))-rel, maxWrite)
			if _, err := m.file.ReadAt(mp.host[rel:rel+n], int64(off)); err != nil {
				return fmt.Errorf("snapshot: reading %s at %#x: %w", m.file.Name(), off, err)
			}
			m.stats.bytesRead.Add(n)
			off += n
		}
	}
	return nil
}

func (m *Memory) mappingAt(off uint64) *mapping {
	for i := range m.maps {
		mp := &m.maps[i]
		if off >= mp.fileOff && off-mp.fileOff < uint64(len(mp.host)) {
			return mp
		}
	}
	return nil
}

// startUFFD registers the mappings with a userfaultfd and starts the fault
// server and, if a working set exists, the prefetcher.
func (m *Memory) startUFFD(ctx context.Context, size int64) error {
	data, err := dataBitmap(m.file, size)
	if err != nil {
		return err
	}
	var ws *WorkingSet
	if m.opts.Backend == BackendPrefetch {
		ws, err = ReadWorkingSet(m.snap)
		switch {
		case err == nil:
			m.wsPages = ws.Pages()
		case errors.Is(err, os.ErrNotExist):
			m.log.Info("no working set yet: recording this run's", "path", m.snap.WorkingSetPath())
		default:
			m.log.Warn("ignoring unusable working set; recording a new one", "err", err)
		}
	}
	u, err := newUFFD()
	if err != nil {
		return err
	}
	for _, mp := range m.maps {
		if err := u.register(mp.host); err != nil {
			u.close()
			return fmt.Errorf("snapshot: %w", err)
		}
	}
	record := m.opts.Record || (m.opts.Backend == BackendPrefetch && ws == nil)
	srv, err := newFaultServer(u, m.file, m.maps, data, uint64(size)/pageSize, record, &m.stats, m.log)
	if err != nil {
		u.close()
		return err
	}
	m.srv = srv
	srv.start()
	if ws != nil {
		m.prefetch = newPrefetcher(srv, ws)
	}
	return nil
}

// Guest returns the guest memory to build the machine with. The machine
// does not own the mappings: Memory.Close unmaps them.
func (m *Memory) Guest() *memory.Guest { return m.guest }

// Stats returns the backend's counters.
func (m *Memory) Stats() Stats {
	return Stats{
		Backend: m.opts.Backend, Setup: m.setup,
		FaultsServed: m.stats.faults.Load(), BytesRead: m.stats.bytesRead.Load(),
		PagesZeroFilled: m.stats.zeroFilled.Load(), PagesPrefetched: m.stats.prefetched.Load(),
		WorkingSetPages: m.wsPages, Recording: m.srv != nil && m.srv.record,
	}
}

// WaitPrefetch waits until the prefetcher has installed the working set
// (at once if there is none) and returns how long it ran.
func (m *Memory) WaitPrefetch(ctx context.Context) (time.Duration, error) {
	if m.prefetch == nil || m.cancel == nil {
		return 0, nil
	}
	select {
	case <-m.prefetch.done:
		return m.prefetch.took, m.prefetch.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Attach ties the fault handler to the machine using this memory. Call it
// before starting the machine. If the handler fails, the machine is stopped (its vCPUs kicked out of the
// guest) and then the userfaultfd is closed so that no vCPU stays blocked
// on a fault. Err then reports the failure. Copy and mmap have no handler.
func (m *Memory) Attach(mach *vmm.Machine) {
	if m.srv == nil {
		return
	}
	m.srv.setOnFail(func(err error) {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stopped := make(chan error, 1)
			go func() { stopped <- mach.Stop(ctx) }()
			// The kick is pending now; a vCPU blocked on a fault either
			// returns at once (interruptible fault) or when the
			// userfaultfd goes away.
			select {
			case <-stopped:
			case <-time.After(100 * time.Millisecond):
			}
			m.srv.release()
			if err := <-stopped; err != nil {
				m.log.Error("stopping the machine after a handler failure", "err", err)
			}
		}()
	})
}

// StartPrefetch starts installing the recorded working set in the
// background, if the prefetch backend found one. Call it right after
// starting the machine: the guest's first instruction does not wait for
// it, and pages the guest needs before the prefetcher reaches them are
// served on demand.
func (m *Memory) StartPrefetch() {
	if m.prefetch != nil && m.cancel == nil {
		ctx, cancel := context.WithCancel(context.Background())
		m.cancel = cancel
		m.prefetch.start(ctx)
	}
}

// Err returns the fault handler's failure (wrapping ErrHandler), or nil.
func (m *Memory) Err() error {
	if m.srv == nil {
		return nil
	}
	return m.srv.Err()
}

// SaveWorkingSet writes the pages recorded so far as the snapshot's
// working-set file and returns how many pages it holds.
func (m *Memory) SaveWorkingSet() (uint64, error) {
	if m.srv == nil || !m.srv.record {
		return 0, fmt.Errorf("snapshot: %s restore is not recording a working set", m.opts.Backend)
	}
	ws := workingSetFromOrder(m.snap.State.ID, m.srv.recorded())
	if err := writeWorkingSet(m.snap.WorkingSetPath(), ws); err != nil {
		return 0, err
	}
	m.log.Info("working set saved", "path", m.snap.WorkingSetPath(), "pages", ws.Pages(), "runs", len(ws.Runs))
	return ws.Pages(), nil
}

// Close stops the handler and prefetcher and unmaps guest memory. The
// machine using it must be closed first.
func (m *Memory) Close() error {
	if m.cancel != nil {
		m.cancel()
	}
	if m.prefetch != nil && m.cancel != nil {
		<-m.prefetch.done
	}
	if m.srv != nil {
		m.srv.stop()
		m.srv.release()
	}
	var errs []error
	for _, mp := range m.maps {
		errs = append(errs, unix.Munmap(mp.host))
	}
	m.maps = nil
	if m.file != nil {
		errs = append(errs, m.file.Close())
	}
	return errors.Join(errs...)
}
