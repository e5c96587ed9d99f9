package snapshot

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// prefetchBatchPages is how many pages, in first-touch order, the
// prefetcher sorts together into sequential reads.
const prefetchBatchPages = 4096

// installPiece is the most one UFFDIO_COPY installs.
const installPiece = 1 << 20

// prefetcher installs a recorded working set in bulk while the guest runs:
// long sequential reads of coalesced extents, UFFDIO_COPY and
// UFFDIO_ZEROPAGE of whole extents without waking anyone, and one wake of
// every region at the end. Pages the guest faults on before the prefetcher
// reaches them are served by the fault server; whichever of the two comes
// second finds the page present and skips it.
type prefetcher struct {
	srv  *faultServer
	ws   *WorkingSet
	plan []Extent
	done chan struct{}
	err  error
	took time.Duration
}

func newPrefetcher(srv *faultServer, w *WorkingSet) *prefetcher {
	return &prefetcher{srv: srv, ws: w, done: make(chan struct{})}
}

func (p *prefetcher) start(ctx context.Context) {
	go func() {
		defer close(p.done)
		t0 := time.Now()
		p.err = p.run(ctx)
		p.took = time.Since(t0)
		if p.err != nil {
			p.srv.log.Warn("prefetch stopped; remaining pages are served on demand", "err", p.err)
		} else {
			p.srv.log.Debug("prefetch done", "extents", len(p.plan), "elapsed", p.took)
		}
	}()
}

func (p *prefetcher) run(ctx context.Context) error {
	s := p.srv
	p.plan = installPlan(p.ws, prefetchBatchPages)
	// The source of the copies is a read-only shared mapping of the memory
	// file: each extent is faulted in with one MADV_POPULATE_READ (a long
	// sequential read into the page cache) and UFFDIO_COPY copies straight
	// from it, so every byte is copied once.
	fi, err := s.file.Stat()
	if err != nil {
		return err
	}
	src, err := unix.Mmap(int(s.file.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("snapshot: mapping %s for prefetch: %w", s.file.Name(), err)
	}
	defer unix.Munmap(src)
	defer func() {
		if s.Err() != nil {
			return // the userfaultfd is gone
		}
		for _, m := range s.maps {
			s.u.wake(m.addr, uint64(len(m.host))) // the one wake
		}
	}()
	for _, x := range p.plan {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.failed:
			return s.Err()
		default:
		}
		for _, r := range splitRuns(s.data, x) {
			for r.Length > 0 {
				addr, room, ok := p.hostAddr(r.Offset)
				if !ok {
					return fmt.Errorf("snapshot: working-set extent at %#x outside guest memory", r.Offset)
				}
				piece := r
				piece.Length = min(r.Length, room)
				if err := p.install(piece, addr, src); err != nil {
					return err
				}
				r.Offset += piece.Length
				r.Length -= piece.Length
			}
		}
	}
	return nil
}

// install reads one run (within one region) from the file mapping and
// installs it at addr.
func (p *prefetcher) install(r run, addr uint64, file []byte) error {
	s := p.srv
	var src []byte
	if r.data {
		src = file[r.Offset : r.Offset+r.Length]
		if err := unix.Madvise(src, unix.MADV_POPULATE_READ); err != nil {
			return fmt.Errorf("snapshot: prefetch read at %#x: %w", r.Offset, err)
		}
		s.stats.bytesRead.Add(r.Length)
	}
	// Install in pieces: each UFFDIO_COPY holds the mmap lock, which the
	// vCPU threads' own page faults also need.
	for off := uint64(0); off < r.Length; off += installPiece {
		k := min(installPiece, r.Length-off)
		var piece []byte
		if src != nil {
			piece = src[off : off+k]
		}
		n, err := s.u.fill(addr+off, piece, k, true)
		if err != nil {
			return fmt.Errorf("snapshot: prefetch install at %#x: %w", addr+off, err)
		}
		s.stats.prefetched.Add(n / pageSize)
		if !r.data {
			s.stats.zeroFilled.Add(n / pageSize)
		}
	}
	return nil
}

// hostAddr maps a memory-file offset to the host address that backs it and
// the bytes left in that region from there.
func (p *prefetcher) hostAddr(off uint64) (addr, room uint64, ok bool) {
	for _, m := range p.srv.maps {
		if off >= m.fileOff && off-m.fileOff < uint64(len(m.host)) {
			return m.addr + off - m.fileOff, uint64(len(m.host)) - (off - m.fileOff), true
		}
	}
	return 0, 0, false
}
