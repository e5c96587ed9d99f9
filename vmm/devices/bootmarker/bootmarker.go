// Package bootmarker is a one-port device through which the guest tells the
// VMM how far its boot got: each byte written to Port is recorded with the
// time elapsed since the VM started, and handed to a callback, so that the
// VMM can log time-to-init and time-to-agent-ready.
//
// Port 0x3f0 is the first port of the floppy controller on a PC, which a
// microVM does not have (and our guest kernel does not probe). The guest
// writes with an OUT instruction after ioperm(0x3f0, 1, 1) (the guest
// kernel has neither /dev/port nor /dev/mem). Code values are the guest's
// choice; MarkInit and MarkReady are the ones ember's guest programs use.
package bootmarker

import (
	"sync"
	"time"

	"github.com/embervm/ember/vmm/bus"
)

// Port is the I/O port of the boot marker; the device spans one port.
const Port = 0x3f0

// Well-known marker codes.
const (
	// MarkInit: the guest's /init (PID 1) started.
	MarkInit = 123 // Firecracker's boot-timer magic value, for familiarity
	// MarkReady: the guest agent is ready to serve.
	MarkReady = 124
)

// MaxMarks bounds how many markers are kept.
const MaxMarks = 32

// Mark is one marker written by the guest.
type Mark struct {
	Code uint8
	// Elapsed is the time since the VM started.
	Elapsed time.Duration
}

// Device records boot markers.
type Device struct {
	record func(Mark)
	now    func() time.Time

	mu    sync.Mutex
	start time.Time
	marks []Mark
}

var _ bus.Device = (*Device)(nil)

// New returns a boot marker device that measures from start and calls
// record (which may be nil) for each marker, on the writing vCPU's thread.
func New(start time.Time, record func(Mark)) *Device {
	return &Device{record: record, now: time.Now, start: start}
}

// Reset sets a new start time and forgets the markers (a VM restored from
// a snapshot starts its clock again).
func (d *Device) Reset(start time.Time) {
	d.mu.Lock()
	d.start, d.marks = start, nil
	d.mu.Unlock()
}

// Marks returns the markers recorded so far (at most MaxMarks, the first
// ones).
func (d *Device) Marks() []Mark {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Mark(nil), d.marks...)
}

// Read implements bus.Device; the port reads as zero.
func (d *Device) Read(_ uint64, data []byte) error {
	clear(data)
	return nil
}

// Write implements bus.Device: a one-byte write at offset 0 records a
// marker. Other writes are ignored.
func (d *Device) Write(offset uint64, data []byte) error {
	if offset != 0 || len(data) != 1 {
		return nil
	}
	d.mu.Lock()
	m := Mark{Code: data[0], Elapsed: d.now().Sub(d.start)}
	if len(d.marks) < MaxMarks {
		d.marks = append(d.marks, m)
	}
	d.mu.Unlock()
	if d.record != nil {
		d.record(m)
	}
	return nil
}
