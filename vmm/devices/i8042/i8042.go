// Package i8042 models the PC keyboard controller as far as a microVM needs
// it: the guest's reboot (command 0xfe on port 0x64, or a write of the
// output port with the reset line low) calls back into the VMM, and the
// probe sequence of Linux's i8042 driver gets plausible answers (self test,
// command byte, port tests, keyboard reset and identify). There is no
// keyboard behind it: no scan codes are ever produced.
package i8042

import (
	"errors"
	"fmt"
	"sync"

	"github.com/embervm/ember/vmm/bus"
	"github.com/embervm/ember/vmm/devices"
)

// The controller's ports, as offsets from Base.
const (
	// Base is the port of the data register; the device spans Size ports
	// (0x60-0x64) of which offsets 0 (data) and 4 (status/command) are
	// decoded.
	Base       = 0x60
	Size       = 5
	DataOffset = 0
	CmdOffset  = 4
)

// Controller commands (port 0x64 writes).
const (
	CmdReadCTR     = 0x20
	CmdWriteCTR    = 0x60
	CmdDisableAux  = 0xa7
	CmdEnableAux   = 0xa8
	CmdTestAux     = 0xa9
	CmdSelfTest    = 0xaa
	CmdTestKbd     = 0xab
	CmdDisableKbd  = 0xad
	CmdEnableKbd   = 0xae
	CmdReadOutput  = 0xd0
	CmdWriteOutput = 0xd1
	CmdWriteKbdBuf = 0xd2
	CmdWriteAuxBuf = 0xd3
	CmdWriteAux    = 0xd4
	CmdPulseReset  = 0xfe
)

// Status register bits.
const (
	StatusOBF     = 0x01 // output buffer full
	StatusSysFlag = 0x04 // passed self test
	StatusCmd     = 0x08 // last write was a command
	StatusAuxData = 0x20 // output buffer holds mouse data
)

// Command byte (CTR) bits.
const (
	CTRKbdInt     = 0x01
	CTRAuxInt     = 0x02
	CTRSysFlag    = 0x04
	CTRKbdDisable = 0x10
	CTRAuxDisable = 0x20
	CTRXlate      = 0x40
)

// Keyboard replies.
const (
	kbdAck      = 0xfa
	kbdSelfTest = 0xaa
	selfTestOK  = 0x55
	portTestOK  = 0x00
	auxNoDevice = 0xff
)

// outQueueLen bounds the output buffer queue (replies of one command).
const outQueueLen = 8

// ErrInterrupt: raising the keyboard interrupt failed.
var ErrInterrupt = errors.New("i8042: interrupt")

// Device is the keyboard controller.
type Device struct {
	irq   devices.Interrupt
	reset func()

	mu      sync.Mutex
	ctr     byte
	status  byte
	pending byte // command waiting for its data byte, or 0
	out     []byte
	outPort byte
}

var _ bus.Device = (*Device)(nil)

// New returns a controller that raises irq (IRQ 1; may be nil) when it has
// a byte for the guest and the command byte enables it, and calls reset
// when the guest asks for a CPU reset.
func New(irq devices.Interrupt, reset func()) *Device {
	return &Device{
		irq:     irq,
		reset:   reset,
		ctr:     CTRKbdInt | CTRSysFlag | CTRXlate,
		status:  StatusSysFlag,
		outPort: 0x01, // reset line high (not in reset)
	}
}

// Read implements bus.Device.
func (d *Device) Read(offset uint64, data []byte) error {
	if len(data) != 1 {
		clear(data)
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch offset {
	case DataOffset:
		if len(d.out) == 0 {
			data[0] = 0
			return nil
		}
		data[0] = d.out[0]
		d.out = d.out[1:]
		if len(d.out) > 0 {
			// The next byte arrives: another interrupt.
			return d.notify()
		}
	case CmdOffset:
		st := d.status &^ StatusOBF
		if len(d.out) > 0 {
			st |= StatusOBF
		}
		data[0] = st
	default:
		data[0] = 0xff
	}
	return nil
}

// Write implements bus.Device.
func (d *Device) Write(offset uint64, data []byte) error {
	if len(data) != 1 {
		return nil
	}
	var doReset bool
	d.mu.Lock()
	var err error
	switch offset {
	case CmdOffset:
		d.status |= StatusCmd
		doReset, err = d.command(data[0])
	case DataOffset:
		d.status &^= StatusCmd
		doReset, err = d.data(data[0])
	}
	d.mu.Unlock()
	if doReset && d.reset != nil {
		d.reset()
	}
	return err
}

// command handles a controller command; d.mu is held.
func (d *Device) command(c byte) (reset bool, err error) {
	d.pending = 0
	switch c {
	case CmdReadCTR:
		return false, d.put(d.ctr)
	case CmdWriteCTR, CmdWriteOutput, CmdWriteKbdBuf, CmdWriteAuxBuf, CmdWriteAux:
		d.pending = c
	case CmdReadOutput:
		return false, d.put(d.outPort)
	case CmdSelfTest:
		d.status |= StatusSysFlag
		return false, d.put(selfTestOK)
	case CmdTestKbd:
		return false, d.put(portTestOK)
	case CmdTestAux:
		return false, d.put(auxNoDevice)
	case CmdDisableKbd:
		d.ctr |= CTRKbdDisable
	case CmdEnableKbd:
		d.ctr &^= CTRKbdDisable
	case CmdDisableAux:
		d.ctr |= CTRAuxDisable
	case CmdEnableAux:
		d.ctr &^= CTRAuxDisable
	case CmdPulseReset:
		return true, nil
	}
	return false, nil
}

// data handles a write to the data port; d.mu is held.
func (d *Device) data(v byte) (reset bool, err error) {
	cmd := d.pending
	d.pending = 0
	switch cmd {
	case CmdWriteCTR:
		d.ctr = v
		if v&CTRSysFlag != 0 {
			d.status |= StatusSysFlag
		}
	case CmdWriteOutput:
		d.outPort = v
		// Bit 0 is the CPU reset line, active low.
		return v&1 == 0, nil
	case CmdWriteKbdBuf:
		return false, d.put(v)
	case CmdWriteAuxBuf, CmdWriteAux:
		// No mouse: nothing answers.
	default:
		// A command for the keyboard itself.
		switch v {
		case 0xff: // reset
			return false, d.put(kbdAck, kbdSelfTest)
		case 0xf2: // identify: MF2 keyboard with translation
			return false, d.put(kbdAck, 0xab, 0x83)
		case 0xee: // echo
			return false, d.put(0xee)
		default:
			return false, d.put(kbdAck)
		}
	}
	return false, nil
}

// put queues bytes for the guest to read from the data port; d.mu is held.
func (d *Device) put(bs ...byte) error {
	wasEmpty := len(d.out) == 0
	for _, b := range bs {
		if len(d.out) < outQueueLen {
			d.out = append(d.out, b)
		}
	}
	if wasEmpty {
		return d.notify()
	}
	return nil
}

// notify raises IRQ 1 if the command byte enables it; d.mu is held.
func (d *Device) notify() error {
	if d.irq == nil || d.ctr&CTRKbdInt == 0 {
		return nil
	}
	if err := d.irq.Trigger(); err != nil {
		return fmt.Errorf("%w: %w", ErrInterrupt, err)
	}
	return nil
}
