package serial

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/embervm/ember/vmm/bus"
	"github.com/embervm/ember/vmm/devices"
)

// Sentinel errors.
var (
	// ErrFIFOFull: Enqueue could not queue every byte.
	ErrFIFOFull = errors.New("serial: receive FIFO full")
	// ErrState: a saved State is invalid.
	ErrState = errors.New("serial: invalid state")
	// ErrInterrupt: raising the interrupt failed.
	ErrInterrupt = errors.New("serial: interrupt")
)

// Serial is a 16550A UART. It is safe for concurrent use: vCPUs access the
// registers while the VMM queues input.
type Serial struct {
	irq devices.Interrupt
	out io.Writer

	mu sync.Mutex
	st State
	// txErrors counts failed writes to out; the guest cannot see them.
	txErrors uint64
	// drained is signalled (without blocking) when the guest empties the
	// receive FIFO.
	drained chan struct{}
}

var _ bus.Device = (*Serial)(nil)

// New returns a UART in its reset state that writes the guest's output to
// out (nil discards it) and raises irq.
func New(irq devices.Interrupt, out io.Writer) *Serial {
	if out == nil {
		out = io.Discard
	}
	s := &Serial{irq: irq, out: out, drained: make(chan struct{}, 1)}
	s.st = resetState()
	return s
}

// resetState is the UART after power-on, with the divisor a BIOS leaves.
func resetState() State {
	return State{
		DLL: defaultBaudDivisor,
		LCR: 0x03, // 8N1
		MCR: MCROUT2,
		MSR: MSRDSR | MSRCTS | MSRDCD,
	}
}

// Read implements bus.Device: a guest read of register offset. Accesses
// wider than a byte read as zero.
func (s *Serial) Read(offset uint64, data []byte) error {
	if len(data) != 1 || offset >= NumRegs {
		clear(data)
		return nil
	}
	s.mu.Lock()
	before := s.st.intrLine()
	data[0] = s.readReg(offset)
	raise := !before && s.st.intrLine()
	drained := len(s.st.Rx) == 0 && offset == RegData && s.st.LCR&LCRDLAB == 0
	s.mu.Unlock()
	if drained {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
	return s.raise(raise)
}

// Write implements bus.Device: a guest write of register offset. Accesses
// wider than a byte are ignored.
func (s *Serial) Write(offset uint64, data []byte) error {
	if len(data) != 1 || offset >= NumRegs {
		return nil
	}
	s.mu.Lock()
	before := s.st.intrLine()
	tx, ok := s.writeReg(offset, data[0])
	raise := !before && s.st.intrLine()
	s.mu.Unlock()
	if ok {
		// Outside the lock: the writer may block (a full pipe) without
		// holding up Enqueue.
		if _, err := s.out.Write([]byte{tx}); err != nil {
			s.mu.Lock()
			s.txErrors++
			s.mu.Unlock()
		}
	}
	return s.raise(raise)
}

// raise triggers the interrupt on a rising edge of the UART's output.
func (s *Serial) raise(edge bool) error {
	if !edge || s.irq == nil {
		return nil
	}
	if err := s.irq.Trigger(); err != nil {
		return fmt.Errorf("%w: %w", ErrInterrupt, err)
	}
	return nil
}

// readReg performs a register read; s.mu is held.
func (s *Serial) readReg(offset uint64) byte {
	st := &s.st
	dlab := st.LCR&LCRDLAB != 0
	switch offset {
	case RegData:
		if dlab {
			return st.DLL
		}
		if len(st.Rx) == 0 {
			return 0
		}
		b := st.Rx[0]
		st.Rx = st.Rx[1:]
		if len(st.Rx) == 0 {
			st.Rx = nil
		}
		return b
	case RegIER:
		if dlab {
			return st.DLM
		}
		return st.IER
	case RegIIR:
		iir := st.iir()
		if iir == IIRTHRE {
			// Reading IIR while it reports THRE clears that source.
			st.THRPending = false
		}
		if st.FIFOEnabled {
			iir |= IIRFIFOBits
		}
		return iir
	case RegLCR:
		return st.LCR
	case RegMCR:
		return st.MCR
	case RegLSR:
		lsr := byte(LSRTHREmpty | LSRTxEmpty)
		if len(st.Rx) > 0 {
			lsr |= LSRDataReady
		}
		if st.Overrun {
			lsr |= LSROverrun
			st.Overrun = false
		}
		return lsr
	case RegMSR:
		msr := st.MSR
		st.MSR &^= msrDeltas
		return msr
	default: // RegSCR
		return st.SCR
	}
}

// writeReg performs a register write; s.mu is held. It returns the byte
// to transmit, if any.
func (s *Serial) writeReg(offset uint64, v byte) (tx byte, ok bool) {
	st := &s.st
	dlab := st.LCR&LCRDLAB != 0
	switch offset {
	case RegData:
		if dlab {
			st.DLL = v
			return 0, false
		}
		// The byte leaves THR at once: THR is empty again and, if the
		// guest wants to know, says so.
		st.THRPending = st.IER&IERTHRE != 0
		if st.MCR&MCRLoop != 0 {
			st.push(v)
			return 0, false
		}
		return v, true
	case RegIER:
		if dlab {
			st.DLM = v
			return 0, false
		}
		st.IER = v & ierMask
		// Enabling the THRE interrupt with THR empty (always, here)
		// raises it, which the 8250 driver relies on to start
		// transmitting.
		st.THRPending = st.IER&IERTHRE != 0
	case RegFCR:
		st.FIFOEnabled = v&FCREnable != 0
		if v&FCRClearRx != 0 {
			st.Rx = nil
		}
	case RegLCR:
		st.LCR = v
	case RegMCR:
		st.setMCR(v & mcrMask)
	case RegSCR:
		st.SCR = v
	}
	return 0, false
}

// Enqueue queues bytes for the guest to read, as many as the receive FIFO
// holds; it returns how many it took and ErrFIFOFull if not all. Input
// while the UART is in loopback mode is dropped, as on the chip.
func (s *Serial) Enqueue(data []byte) (int, error) {
	s.mu.Lock()
	before := s.st.intrLine()
	n := 0
	if s.st.MCR&MCRLoop == 0 {
		n = min(len(data), FIFOSize-len(s.st.Rx))
		s.st.Rx = append(s.st.Rx, data[:n]...)
	} else {
		n = len(data)
	}
	raise := !before && s.st.intrLine()
	s.mu.Unlock()
	err := s.raise(raise)
	if n < len(data) && err == nil {
		err = fmt.Errorf("%w: queued %d of %d bytes", ErrFIFOFull, n, len(data))
	}
	return n, err
}

// FIFOSpace returns how many bytes Enqueue would take now.
func (s *Serial) FIFOSpace() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return FIFOSize - len(s.st.Rx)
}

// Drained returns a channel that receives a value when the guest has read
// the receive FIFO empty: the VMM's input pump waits on it after
// ErrFIFOFull instead of polling.
func (s *Serial) Drained() <-chan struct{} { return s.drained }

// TxErrors returns the number of guest output bytes the writer refused.
func (s *Serial) TxErrors() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.txErrors
}
