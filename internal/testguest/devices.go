package testguest

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/bus"
)

// Ports is the test guest's port-I/O device (PortReportLo..PortPing).
type Ports struct {
	mu      sync.Mutex
	lo      uint32
	reports []uint64
	out     io.Writer
	pings   atomic.Uint64
	first   atomic.Int64 // Unix ns of the first write, 0 before
}

var _ bus.Device = (*Ports)(nil)

// NewPorts returns the port device; bytes the guest prints go to out (nil
// discards them).
func NewPorts(out io.Writer) *Ports {
	if out == nil {
		out = io.Discard
	}
	return &Ports{out: out}
}

// Reports returns the values the guest reported, in order.
func (p *Ports) Reports() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]uint64(nil), p.reports...)
}

// FirstWrite returns when the guest first wrote to a test port (a report,
// an exit, ...), or the zero time if it has not yet.
func (p *Ports) FirstWrite() time.Time {
	if ns := p.first.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Pings returns how many times the guest wrote PortPing.
func (p *Ports) Pings() uint64 { return p.pings.Load() }

func value(data []byte) uint64 {
	var b [8]byte
	copy(b[:], data)
	return binary.LittleEndian.Uint64(b[:])
}

// Read implements bus.Device: every port reads 0.
func (p *Ports) Read(offset uint64, data []byte) error {
	clear(data)
	return nil
}

// Write implements bus.Device.
func (p *Ports) Write(offset uint64, data []byte) error {
	if p.first.Load() == 0 {
		p.first.CompareAndSwap(0, time.Now().UnixNano())
	}
	v := value(data)
	switch offset + PortReportLo {
	case PortReportLo:
		p.mu.Lock()
		p.lo = uint32(v)
		p.mu.Unlock()
	case PortReportHi:
		p.mu.Lock()
		p.reports = append(p.reports, uint64(p.lo)|v<<32)
		p.mu.Unlock()
	case PortExit:
		return &vmm.StopRequest{Code: int(int32(uint32(v))), Reason: "test guest exit port"}
	case PortPutc:
		_, err := p.out.Write(data[:1])
		return err
	case PortPing:
		p.pings.Add(1)
	default:
		return fmt.Errorf("testguest: write to unused test port %#x", offset+PortReportLo)
	}
	return nil
}

// MMIODevice is the test MMIO device at MMIOBase: register 0 reads
// MMIOMagic; registers 1..15 store what is written.
type MMIODevice struct {
	mu     sync.Mutex
	regs   [16]uint64
	reads  int
	writes int
}

var _ bus.Device = (*MMIODevice)(nil)

// Accesses returns how many reads and writes the guest made.
func (d *MMIODevice) Accesses() (reads, writes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reads, d.writes
}

// Reg returns register i.
func (d *MMIODevice) Reg(i int) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.regs[i]
}

func regIndex(offset uint64, n int) (int, error) {
	if offset%8 != 0 || offset/8 >= 16 || n > 8 {
		return 0, fmt.Errorf("testguest: MMIO access at offset %#x (%d bytes) is not a register", offset, n)
	}
	return int(offset / 8), nil
}

// Read implements bus.Device.
func (d *MMIODevice) Read(offset uint64, data []byte) error {
	i, err := regIndex(offset, len(data))
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	v := d.regs[i]
	if i == 0 {
		v = MMIOMagic
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	copy(data, b[:])
	return nil
}

// Write implements bus.Device. Writes to register 0 are refused.
func (d *MMIODevice) Write(offset uint64, data []byte) error {
	i, err := regIndex(offset, len(data))
	if err != nil {
		return err
	}
	if i == 0 {
		return fmt.Errorf("testguest: write to read-only MMIO register 0")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes++
	d.regs[i] = value(data)
	return nil
}
