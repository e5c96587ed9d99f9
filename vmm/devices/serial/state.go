package serial

import "fmt"

// State is the UART's register state, plain data for snapshots.
type State struct {
	DLL, DLM byte // divisor latch
	IER      byte
	LCR      byte
	MCR      byte
	// MSR holds the modem status lines and their delta bits.
	MSR byte
	SCR byte
	// FIFOEnabled reflects FCR bit 0.
	FIFOEnabled bool
	// THRPending is the THRE interrupt source: set when THR empties with
	// IER.THRE on, cleared by reading IIR or writing THR.
	THRPending bool
	// Overrun is LSR.OE (a loopback byte found the FIFO full).
	Overrun bool
	// Rx is the receive FIFO, oldest byte first.
	Rx []byte
}

// Save returns a copy of the UART's state.
func (s *Serial) Save() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Rx = append([]byte(nil), s.st.Rx...)
	return st
}

// Restore replaces the UART's state with st. It does not raise the
// interrupt: a pending interrupt's edge is part of the interrupt
// controller's saved state.
func (s *Serial) Restore(st State) error {
	if len(st.Rx) > FIFOSize {
		return fmt.Errorf("%w: %d bytes in a %d-byte FIFO", ErrState, len(st.Rx), FIFOSize)
	}
	if st.IER&^ierMask != 0 || st.MCR&^mcrMask != 0 {
		return fmt.Errorf("%w: reserved bits in IER %#x or MCR %#x", ErrState, st.IER, st.MCR)
	}
	st.Rx = append([]byte(nil), st.Rx...)
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	return nil
}

// iir returns the highest-priority pending enabled interrupt, without the
// FIFO bits: receiver line status, received data, THR empty, modem status.
func (st *State) iir() byte {
	switch {
	case st.IER&IERRLS != 0 && st.Overrun:
		return IIRRLS
	case st.IER&IERRDA != 0 && len(st.Rx) > 0:
		return IIRRDA
	case st.IER&IERTHRE != 0 && st.THRPending:
		return IIRTHRE
	case st.IER&IERMS != 0 && st.MSR&msrDeltas != 0:
		return IIRMS
	}
	return IIRNone
}

// intrLine reports whether the UART's interrupt output is asserted.
func (st *State) intrLine() bool { return st.iir() != IIRNone }

// push appends a byte to the receive FIFO, flagging an overrun when full.
func (st *State) push(b byte) {
	if len(st.Rx) >= FIFOSize {
		st.Overrun = true
		return
	}
	st.Rx = append(st.Rx, b)
}

// setMCR writes MCR. In loopback mode the modem status inputs follow the
// modem control outputs (CTS=RTS, DSR=DTR, RI=OUT1, DCD=OUT2) with delta
// bits for changes; leaving loopback restores the lines of a connected,
// ready terminal.
func (st *State) setMCR(v byte) {
	st.MCR = v
	var lines byte
	if v&MCRLoop != 0 {
		if v&MCRRTS != 0 {
			lines |= MSRCTS
		}
		if v&MCRDTR != 0 {
			lines |= MSRDSR
		}
		if v&MCROUT1 != 0 {
			lines |= MSRRI
		}
		if v&MCROUT2 != 0 {
			lines |= MSRDCD
		}
	} else {
		lines = MSRCTS | MSRDSR | MSRDCD
	}
	old := st.MSR
	delta := old & msrDeltas
	changed := (old ^ lines) & 0xf0
	if changed&MSRCTS != 0 {
		delta |= MSRDeltaCTS
	}
	if changed&MSRDSR != 0 {
		delta |= MSRDeltaDSR
	}
	if changed&MSRDCD != 0 {
		delta |= MSRDeltaDCD
	}
	if old&MSRRI != 0 && lines&MSRRI == 0 {
		delta |= MSRTrailRI // trailing edge of RI
	}
	st.MSR = lines | delta
}
