package snapshot

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/memory"
)

// counters are a restore's memory statistics, updated by the fault handler
// and the prefetcher while the guest runs.
type counters struct {
	faults     atomic.Uint64 // faults served by the handler
	bytesRead  atomic.Uint64 // bytes read from the memory file
	zeroFilled atomic.Uint64 // pages installed as zero pages
	prefetched atomic.Uint64 // pages installed by the prefetcher
}

// mapping is one guest memory region's host mapping and its place in the
// memory file.
type mapping struct {
	host    []byte
	addr    uint64 // host address of host[0]
	fileOff uint64
}

// faultServer answers userfaultfd missing-page faults on guest memory from
// the memory file: data pages with UFFDIO_COPY of the page read from the
// file, holes with UFFDIO_ZEROPAGE (never read). It runs on its own locked
// OS thread. If it fails it stops serving, records why, and calls onFail;
// release then lets blocked faults go.
type faultServer struct {
	u     *uffd
	file  *os.File
	maps  []mapping
	data  memory.Bitmap // memory-file pages that hold data
	stats *counters
	log   *slog.Logger

	stopFD int           // eventfd that ends the serve loop
	done   chan struct{} // closed when the serve loop has returned

	mu       sync.Mutex
	record   bool
	seen     memory.Bitmap // pages recorded so far
	order    []uint64      // memory-file pages in first-fault order
	err      error
	failed   chan struct{} // closed on failure
	onFail   func(error)
	released bool
}

func newFaultServer(u *uffd, file *os.File, maps []mapping, data memory.Bitmap, filePages uint64,
	record bool, stats *counters, log *slog.Logger) (*faultServer, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("snapshot: eventfd: %w", err)
	}
	s := &faultServer{
		u: u, file: file, maps: maps, data: data, stats: stats, log: log,
		stopFD: efd, done: make(chan struct{}), failed: make(chan struct{}), record: record,
	}
	if record {
		s.seen = memory.NewBitmap(filePages)
	}
	return s, nil
}

// start runs the serve loop on its own goroutine and OS thread.
func (s *faultServer) start() {
	go func() {
		runtime.LockOSThread()
		defer close(s.done)
		defer func() {
			if r := recover(); r != nil {
				s.fail(fmt.Errorf("%w: handler panicked: %v", ErrHandler, r))
			}
		}()
		if err := s.serve(); err != nil {
			s.fail(err)
		}
	}()
}

// serve reads fault events until stopped or until one cannot be served.
func (s *faultServer) serve() error {
	buf, err := mapAnon(pageSize) // page-aligned bounce buffer for reads
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	msgs := make([]byte, 64*uffdMsgSize)
	fds := []unix.PollFd{{Fd: int32(s.u.fd), Events: unix.POLLIN}, {Fd: int32(s.stopFD), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("%w: poll: %w", ErrHandler, err)
		}
		if fds[1].Revents != 0 {
			return nil
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			return fmt.Errorf("%w: userfaultfd poll events %#x", ErrHandler, fds[0].Revents)
		}
		n, err := unix.Read(s.u.fd, msgs)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: reading fault events: %w", ErrHandler, err)
		}
		for i := 0; i+uffdMsgSize <= n; i += uffdMsgSize {
			m := msgs[i : i+uffdMsgSize]
			if m[0] != uffdEventPagefault {
				continue
			}
			addr := le64(m[16:]) &^ (pageSize - 1)
			if err := s.serveFault(addr, buf); err != nil {
				return err
			}
		}
	}
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// locate returns the memory-file page of a faulting host address.
func (s *faultServer) locate(addr uint64) (uint64, bool) {
	for _, m := range s.maps {
		if addr >= m.addr && addr-m.addr < uint64(len(m.host)) {
			return (m.fileOff + addr - m.addr) / pageSize, true
		}
	}
	return 0, false
}

func (s *faultServer) serveFault(addr uint64, buf []byte) error {
	page, ok := s.locate(addr)
	if !ok {
		return fmt.Errorf("%w: fault at %#x outside guest memory", ErrHandler, addr)
	}
	s.stats.faults.Add(1)
	if s.record {
		s.mu.Lock()
		if !s.seen.Test(page) {
			s.seen.Set(page)
			s.order = append(s.order, page)
		}
		s.mu.Unlock()
	}
	if !s.data.Test(page) {
		n, err := s.u.fill(addr, nil, pageSize, false)
		if err != nil {
			return fmt.Errorf("%w: zero page at %#x: %w", ErrHandler, addr, err)
		}
		if n > 0 {
			s.stats.zeroFilled.Add(1)
		}
		return nil
	}
	if _, err := s.file.ReadAt(buf, int64(page*pageSize)); err != nil {
		return fmt.Errorf("%w: reading page %d of %s: %w", ErrHandler, page, s.file.Name(), err)
	}
	s.stats.bytesRead.Add(pageSize)
	if _, err := s.u.fill(addr, buf, pageSize, false); err != nil {
		return fmt.Errorf("%w: installing page at %#x: %w", ErrHandler, addr, err)
	}
	return nil
}

// fail records the first failure and tells whoever watches.
func (s *faultServer) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	close(s.failed)
	onFail := s.onFail
	s.mu.Unlock()
	s.log.Error("userfaultfd handler failed", "err", err)
	if onFail != nil {
		onFail(err)
	} else {
		s.release()
	}
}

// setOnFail installs the failure callback; if the server has already
// failed it is called at once.
func (s *faultServer) setOnFail(f func(error)) {
	s.mu.Lock()
	s.onFail = f
	err := s.err
	s.mu.Unlock()
	if err != nil {
		f(err)
	}
}

// Err returns why the server failed, or nil.
func (s *faultServer) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// release closes the userfaultfd after a failure: the kernel wakes every
// thread blocked on a fault and unregisters the ranges, so no vCPU is left
// hanging (the pages it retries on read as zeros; by then the machine has
// been told to stop).
func (s *faultServer) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	s.u.close()
}

// stop ends the serve loop and waits for it.
func (s *faultServer) stop() {
	var one [8]byte
	one[0] = 1
	unix.Write(s.stopFD, one[:])
	<-s.done
	unix.Close(s.stopFD)
}

// recorded returns the pages faulted so far, in first-fault order.
func (s *faultServer) recorded() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.order...)
}
