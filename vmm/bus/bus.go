// Package bus dispatches guest port-I/O and MMIO accesses to devices by
// address range.
package bus

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Sentinel errors.
var (
	// ErrNoDevice: no device claims the accessed address.
	ErrNoDevice = errors.New("bus: no device at address")
	// ErrOverlap: a device's range overlaps one already on the bus.
	ErrOverlap = errors.New("bus: device ranges overlap")
	// ErrEmptyRange: a device was inserted with length zero or a range that
	// wraps around the address space.
	ErrEmptyRange = errors.New("bus: empty or wrapping range")
)

// Device is something the guest reaches through port I/O or MMIO. Offsets
// are relative to the base the device was inserted at; len(data) is the
// access width (1, 2, 4 or 8 bytes). A read fills data. An error stops the
// vCPU that made the access, with that error.
type Device interface {
	Read(offset uint64, data []byte) error
	Write(offset uint64, data []byte) error
}

type entry struct {
	base, size uint64
	dev        Device
}

// Bus is an ordered set of non-overlapping device ranges. It is safe for
// concurrent use: vCPUs dispatch while devices are inserted or removed.
type Bus struct {
	name    string
	mu      sync.RWMutex
	entries []entry // sorted by base
}

// New returns an empty bus; name ("pio", "mmio") appears in errors.
func New(name string) *Bus { return &Bus{name: name} }

// Insert places dev at [base, base+size).
func (b *Bus) Insert(dev Device, base, size uint64) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s %w: [%#x,+%#x)", b.name, ErrEmptyRange, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 {
		if p := b.entries[i-1]; p.base+p.size > base {
			return fmt.Errorf("%s %w: [%#x,+%#x) and [%#x,+%#x)", b.name, ErrOverlap, base, size, p.base, p.size)
		}
	}
	if i < len(b.entries) {
		if n := b.entries[i]; base+size > n.base {
			return fmt.Errorf("%s %w: [%#x,+%#x) and [%#x,+%#x)", b.name, ErrOverlap, base, size, n.base, n.size)
		}
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = entry{base: base, size: size, dev: dev}
	return nil
}

// Remove takes the device inserted at base off the bus.
func (b *Bus) Remove(base uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base == base {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("%s %w: %#x", b.name, ErrNoDevice, base)
}

// lookup finds the device whose range holds all of [addr, addr+n).
func (b *Bus) lookup(addr uint64, n int) (Device, uint64, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base+b.entries[i].size > addr })
	if i < len(b.entries) {
		e := b.entries[i]
		if e.base <= addr && addr-e.base+uint64(n) <= e.size {
			return e.dev, addr - e.base, nil
		}
	}
	return nil, 0, &AccessError{Bus: b.name, Addr: addr, Len: n}
}

// Read dispatches a guest read at addr.
func (b *Bus) Read(addr uint64, data []byte) error {
	dev, off, err := b.lookup(addr, len(data))
	if err != nil {
		err.(*AccessError).Write = false
		return err
	}
	return dev.Read(off, data)
}

// Write dispatches a guest write at addr.
func (b *Bus) Write(addr uint64, data []byte) error {
	dev, off, err := b.lookup(addr, len(data))
	if err != nil {
		ae := err.(*AccessError)
		ae.Write = true
		ae.Data = append([]byte(nil), data...)
		return ae
	}
	return dev.Write(off, data)
}

// AccessError describes a guest access that no device claims. It matches
// ErrNoDevice with errors.Is.
type AccessError struct {
	Bus   string
	Addr  uint64
	Len   int
	Write bool
	Data  []byte
}

func (e *AccessError) Error() string {
	if e.Write {
		return fmt.Sprintf("guest %d-byte %s write of %x to unclaimed address %#x", e.Len, e.Bus, e.Data, e.Addr)
	}
	return fmt.Sprintf("guest %d-byte %s read from unclaimed address %#x", e.Len, e.Bus, e.Addr)
}

// Is makes errors.Is(err, ErrNoDevice) true.
func (e *AccessError) Is(target error) bool { return target == ErrNoDevice }
