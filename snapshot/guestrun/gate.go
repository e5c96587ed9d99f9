package guestrun

import (
	"sync/atomic"

	"github.com/embervm/ember/vmm/bus"
)

// GatePort is the gate device's port, after the test-guest ports.
const GatePort = 0x530

// Gate is a one-port device a test guest polls: it reads 0 while closed
// and 1 once opened. The guest that builds a snapshot waits at a closed
// gate; its restored copies find it open.
type Gate struct {
	open  atomic.Bool
	reads atomic.Uint64
}

var _ bus.Device = (*Gate)(nil)

// Open opens the gate.
func (g *Gate) Open() { g.open.Store(true) }

// Reads returns how often the guest read the gate.
func (g *Gate) Reads() uint64 { return g.reads.Load() }

// Read implements bus.Device.
func (g *Gate) Read(offset uint64, data []byte) error {
	g.reads.Add(1)
	clear(data)
	if g.open.Load() && len(data) > 0 {
		data[0] = 1
	}
	return nil
}

// Write implements bus.Device; writes are ignored.
func (g *Gate) Write(offset uint64, data []byte) error { return nil }
