package snapshot

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/memory"
)

// Accessor returns guest memory for the VMM's own accesses (device models,
// virtio transports). Use it instead of Guest() for anything that reads or
// writes guest memory from Go code.
//
// Why: with the uffd and prefetch backends, Go code that touches a page
// the handler has not installed yet blocks inside the page fault, outside
// any system call, where the Go runtime cannot stop it. If a garbage
// collection (or anything else that stops the world) starts then, it waits
// for that goroutine forever, while the goroutine waits for the fault
// handler, which needs the world to run again: the process deadlocks. So
// for these backends the accessor first faults the pages in with
// MADV_POPULATE_WRITE, a system call (during which the runtime can stop
// the world and the handler can serve the fault), and remembers which
// pages are present (a userfaultfd-installed page stays present), so a
// page costs one system call at most. Guest (vCPU) faults happen inside
// KVM_RUN, a system call, and need nothing. Copy and mmap have no handler:
// their accessor is the guest memory itself.
func (m *Memory) Accessor() memory.Accessor {
	if m.srv == nil {
		return m.guest
	}
	if m.access == nil {
		a := &populatingAccessor{g: m.guest}
		for _, r := range m.guest.Regions() {
			a.present = append(a.present, make([]atomic.Uint64, (r.Pages()+63)/64))
		}
		m.access = a
	}
	return m.access
}

// populatingAccessor faults pages in with a system call before Go code
// touches them (see Memory.Accessor).
type populatingAccessor struct {
	g       *memory.Guest
	present [][]atomic.Uint64 // per region, one bit per page
}

var _ memory.Accessor = (*populatingAccessor)(nil)

// ensure makes [gpa, gpa+n) present. Ranges outside guest memory are left
// to the guest memory's own checks.
func (a *populatingAccessor) ensure(gpa, n uint64) error {
	if n == 0 {
		return nil
	}
	end := gpa + n
	if end < gpa {
		return nil
	}
	for i, r := range a.g.Regions() {
		lo, hi := max(gpa, r.GPA()), min(end, r.End())
		if lo >= hi {
			continue
		}
		first, last := (lo-r.GPA())/pageSize, (hi-1-r.GPA())/pageSize
		bits := a.present[i]
		for p := first; p <= last; {
			if bits[p/64].Load()&(1<<(p%64)) != 0 {
				p++
				continue
			}
			q := p
			for q+1 <= last && bits[(q+1)/64].Load()&(1<<((q+1)%64)) == 0 {
				q++
			}
			host := r.Host()[p*pageSize : (q+1)*pageSize]
			if err := unix.Madvise(host, unix.MADV_POPULATE_WRITE); err != nil {
				return fmt.Errorf("%w: faulting in guest pages [%#x,+%#x) for the VMM: %w",
					ErrHandler, r.GPA()+p*pageSize, (q+1-p)*pageSize, err)
			}
			for k := p; k <= q; k++ {
				bits[k/64].Or(1 << (k % 64))
			}
			p = q + 1
		}
	}
	return nil
}

// ReadAt implements memory.Accessor.
func (a *populatingAccessor) ReadAt(p []byte, gpa uint64) error {
	if err := a.ensure(gpa, uint64(len(p))); err != nil {
		return err
	}
	return a.g.ReadAt(p, gpa)
}

// WriteAt implements memory.Accessor.
func (a *populatingAccessor) WriteAt(p []byte, gpa uint64) error {
	if err := a.ensure(gpa, uint64(len(p))); err != nil {
		return err
	}
	return a.g.WriteAt(p, gpa)
}

// Slice implements memory.Accessor: the returned bytes are present.
func (a *populatingAccessor) Slice(gpa, n uint64) ([]byte, error) {
	b, err := a.g.Slice(gpa, n)
	if err != nil {
		return nil, err
	}
	if err := a.ensure(gpa, n); err != nil {
		return nil, err
	}
	return b, nil
}

// Contains reports whether [gpa, gpa+n) is guest memory (the check the
// virtio chain parser prefers to Slice).
func (a *populatingAccessor) Contains(gpa, n uint64) bool { return a.g.Contains(gpa, n) }
