package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Accessor is the bounds-checked view of guest memory that loaders and device
// models use. *Guest implements it.
type Accessor interface {
	// ReadAt fills p from guest physical address gpa.
	ReadAt(p []byte, gpa uint64) error
	// WriteAt copies p to guest physical address gpa.
	WriteAt(p []byte, gpa uint64) error
	// Slice returns the host bytes of [gpa, gpa+n), which must lie in one
	// region. Writes to it go straight to guest memory.
	Slice(gpa, n uint64) ([]byte, error)
}

var _ Accessor = (*Guest)(nil)

// Guest is a VM's guest physical memory: non-overlapping regions, sorted by
// address.
type Guest struct {
	regions []*Region
}

// New builds guest memory from regions; it takes ownership of them.
func New(regions ...*Region) (*Guest, error) {
	rs := append([]*Region(nil), regions...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].gpa < rs[j].gpa })
	for i := 1; i < len(rs); i++ {
		if rs[i].gpa < rs[i-1].End() {
			return nil, fmt.Errorf("%w: [%#x,%#x) and [%#x,%#x)", ErrOverlap,
				rs[i-1].gpa, rs[i-1].End(), rs[i].gpa, rs[i].End())
		}
	}
	return &Guest{regions: rs}, nil
}

// Range is a span of guest physical addresses.
type Range struct {
	GPA  uint64
	Size uint64
}

// NewAnonymous maps anonymous private memory for each range.
func NewAnonymous(ranges ...Range) (*Guest, error) {
	var rs []*Region
	for _, r := range ranges {
		reg, err := NewRegion(r.GPA, r.Size, Backing{})
		if err != nil {
			for _, x := range rs {
				x.Close()
			}
			return nil, err
		}
		rs = append(rs, reg)
	}
	g, err := New(rs...)
	if err != nil {
		for _, x := range rs {
			x.Close()
		}
		return nil, err
	}
	return g, nil
}

// Regions returns the regions in address order.
func (g *Guest) Regions() []*Region { return g.regions }

// Size returns the total size of all regions.
func (g *Guest) Size() uint64 {
	var n uint64
	for _, r := range g.regions {
		n += r.Size()
	}
	return n
}

// Close unmaps every owned region.
func (g *Guest) Close() error {
	var errs []error
	for _, r := range g.regions {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// find returns the region holding gpa.
func (g *Guest) find(gpa uint64) *Region {
	i := sort.Search(len(g.regions), func(i int) bool { return g.regions[i].End() > gpa })
	if i < len(g.regions) && g.regions[i].gpa <= gpa {
		return g.regions[i]
	}
	return nil
}

// Contains reports whether all of [gpa, gpa+n) is guest memory.
func (g *Guest) Contains(gpa, n uint64) bool {
	for n > 0 {
		r := g.find(gpa)
		if r == nil {
			return false
		}
		avail := r.End() - gpa
		if n <= avail {
			return true
		}
		gpa, n = r.End(), n-avail
	}
	return true
}

// Slice implements Accessor.
func (g *Guest) Slice(gpa, n uint64) ([]byte, error) {
	r := g.find(gpa)
	if r == nil || !r.contains(gpa, n) {
		return nil, fmt.Errorf("%w: [%#x,+%#x)", ErrOutOfRange, gpa, n)
	}
	off := gpa - r.gpa
	return r.host[off : off+n : off+n], nil
}

// do applies f to each piece of [gpa, gpa+len(p)), which may span adjacent
// regions. It checks the whole range before touching any of it.
func (g *Guest) do(p []byte, gpa uint64, f func(host, p []byte)) error {
	n := uint64(len(p))
	if gpa+n < gpa || !g.Contains(gpa, n) {
		return fmt.Errorf("%w: [%#x,+%#x)", ErrOutOfRange, gpa, n)
	}
	for len(p) > 0 {
		r := g.find(gpa)
		off := gpa - r.gpa
		k := min(uint64(len(p)), r.Size()-off)
		f(r.host[off:off+k], p[:k])
		p, gpa = p[k:], gpa+k
	}
	return nil
}

// ReadAt implements Accessor.
func (g *Guest) ReadAt(p []byte, gpa uint64) error {
	return g.do(p, gpa, func(host, p []byte) { copy(p, host) })
}

// WriteAt implements Accessor.
func (g *Guest) WriteAt(p []byte, gpa uint64) error {
	return g.do(p, gpa, func(host, p []byte) { copy(host, p) })
}

// ReadUint64 reads a little-endian uint64 at gpa.
func (g *Guest) ReadUint64(gpa uint64) (uint64, error) {
	var b [8]byte
	if err := g.ReadAt(b[:], gpa); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// WriteUint64 writes a little-endian uint64 at gpa.
func (g *Guest) WriteUint64(gpa, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return g.WriteAt(b[:], gpa)
}

// Zero clears [gpa, gpa+n).
func (g *Guest) Zero(gpa, n uint64) error {
	if gpa+n < gpa || !g.Contains(gpa, n) {
		return fmt.Errorf("%w: [%#x,+%#x)", ErrOutOfRange, gpa, n)
	}
	for n > 0 {
		r := g.find(gpa)
		off := gpa - r.gpa
		k := min(n, r.Size()-off)
		clear(r.host[off : off+k])
		gpa, n = gpa+k, n-k
	}
	return nil
}
