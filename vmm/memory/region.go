package memory

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// PageSize is the guest page size ember tracks (dirty logs, snapshots).
const PageSize = 4096

// Sentinel errors.
var (
	ErrOutOfRange = errors.New("memory: guest physical address out of range")
	ErrOverlap    = errors.New("memory: regions overlap")
	ErrAlignment  = errors.New("memory: region not page aligned")
)

// Backing says what a region's host mapping is made of.
type Backing struct {
	// File, when set, is mapped at Offset instead of anonymous memory.
	File   *os.File
	Offset int64
	// Shared maps with MAP_SHARED: writes reach the file (or, for anonymous
	// memory, are visible to a forked child). Otherwise the mapping is
	// private: copy-on-write over the file.
	Shared bool
}

// Region is a contiguous range of guest physical memory backed by one host
// mapping.
type Region struct {
	gpa  uint64
	host []byte
	// owned reports whether Close should unmap host.
	owned bool
}

// NewRegion maps size bytes for guest physical address gpa.
func NewRegion(gpa, size uint64, b Backing) (*Region, error) {
	if gpa%PageSize != 0 || size%PageSize != 0 || size == 0 {
		return nil, fmt.Errorf("%w: gpa %#x size %#x", ErrAlignment, gpa, size)
	}
	if gpa+size < gpa {
		return nil, fmt.Errorf("%w: gpa %#x + size %#x wraps", ErrOutOfRange, gpa, size)
	}
	flags := unix.MAP_PRIVATE
	if b.Shared {
		flags = unix.MAP_SHARED
	}
	fd := -1
	if b.File != nil {
		fd = int(b.File.Fd())
	} else {
		flags |= unix.MAP_ANONYMOUS
	}
	// NORESERVE: guest memory is touched sparsely; do not charge it all up
	// front against overcommit.
	host, err := unix.Mmap(fd, b.Offset, int(size), unix.PROT_READ|unix.PROT_WRITE, flags|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("memory: mmap %d bytes for gpa %#x: %w", size, gpa, err)
	}
	return &Region{gpa: gpa, host: host, owned: true}, nil
}

// NewRegionFromMapping wraps an existing host mapping (for example one that a
// userfaultfd handler serves). The caller keeps ownership of host.
func NewRegionFromMapping(gpa uint64, host []byte) (*Region, error) {
	if gpa%PageSize != 0 || len(host)%PageSize != 0 || len(host) == 0 {
		return nil, fmt.Errorf("%w: gpa %#x size %#x", ErrAlignment, gpa, len(host))
	}
	return &Region{gpa: gpa, host: host}, nil
}

// GPA returns the region's first guest physical address.
func (r *Region) GPA() uint64 { return r.gpa }

// Size returns the region's length in bytes.
func (r *Region) Size() uint64 { return uint64(len(r.host)) }

// End returns the first guest physical address after the region.
func (r *Region) End() uint64 { return r.gpa + uint64(len(r.host)) }

// Host returns the host mapping. It is for registering the region with KVM
// and for snapshot I/O; device code uses the bounds-checked accessors.
func (r *Region) Host() []byte { return r.host }

// Pages returns the number of pages in the region.
func (r *Region) Pages() uint64 { return r.Size() / PageSize }

// contains reports whether [gpa, gpa+n) lies inside the region.
func (r *Region) contains(gpa, n uint64) bool {
	return gpa >= r.gpa && gpa-r.gpa <= r.Size() && n <= r.Size()-(gpa-r.gpa)
}

// Close unmaps the region if it owns its mapping.
func (r *Region) Close() error {
	if !r.owned || r.host == nil {
		return nil
	}
	err := unix.Munmap(r.host)
	r.host = nil
	return err
}
