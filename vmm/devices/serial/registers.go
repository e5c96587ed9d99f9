package serial

// Register offsets from the port base (COM1 is at 0x3f8).
const (
	RegData = 0 // RBR (read), THR (write); DLL when LCR.DLAB
	RegIER  = 1 // interrupt enable; DLM when LCR.DLAB
	RegIIR  = 2 // interrupt identification (read)
	RegFCR  = 2 // FIFO control (write)
	RegLCR  = 3 // line control
	RegMCR  = 4 // modem control
	RegLSR  = 5 // line status
	RegMSR  = 6 // modem status
	RegSCR  = 7 // scratch
	// NumRegs is the number of ports the UART occupies.
	NumRegs = 8
)

// IER bits.
const (
	IERRDA  = 0x01 // received data available
	IERTHRE = 0x02 // transmitter holding register empty
	IERRLS  = 0x04 // receiver line status
	IERMS   = 0x08 // modem status
	ierMask = 0x0f
)

// IIR values (bits 3:1 identify the interrupt; bit 0 set means none).
const (
	IIRNone     = 0x01
	IIRRLS      = 0x06
	IIRRDA      = 0x04
	IIRTHRE     = 0x02
	IIRMS       = 0x00
	IIRFIFOBits = 0xc0 // FIFOs enabled (16550A)
)

// FCR bits.
const (
	FCREnable  = 0x01
	FCRClearRx = 0x02
	FCRClearTx = 0x04
)

// LCR and MCR bits.
const (
	LCRDLAB = 0x80
	MCRDTR  = 0x01
	MCRRTS  = 0x02
	MCROUT1 = 0x04
	MCROUT2 = 0x08
	MCRLoop = 0x10
	mcrMask = 0x1f
)

// LSR bits.
const (
	LSRDataReady = 0x01
	LSROverrun   = 0x02
	LSRTHREmpty  = 0x20
	LSRTxEmpty   = 0x40
)

// MSR bits.
const (
	MSRDeltaCTS = 0x01
	MSRDeltaDSR = 0x02
	MSRTrailRI  = 0x04
	MSRDeltaDCD = 0x08
	MSRCTS      = 0x10
	MSRDSR      = 0x20
	MSRRI       = 0x40
	MSRDCD      = 0x80
	msrDeltas   = 0x0f
)

// FIFOSize is the capacity of the receive FIFO: bytes the VMM queues beyond
// it are refused, not lost.
const FIFOSize = 64

// defaultBaudDivisor is 115200 baud at the PC's 1.8432 MHz clock.
const defaultBaudDivisor = 1
