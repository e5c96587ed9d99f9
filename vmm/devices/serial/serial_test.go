package serial

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// countIRQ records interrupt triggers.
type countIRQ struct {
	n   int
	err error
}

func (c *countIRQ) Trigger() error { c.n++; return c.err }

// driver plays the guest's 8250 driver.
type driver struct {
	t *testing.T
	s *Serial
}

func (d driver) out(off uint64, v byte) {
	d.t.Helper()
	if err := d.s.Write(off, []byte{v}); err != nil {
		d.t.Fatalf("write %d: %v", off, err)
	}
}

func (d driver) in(off uint64) byte {
	d.t.Helper()
	b := []byte{0xee}
	if err := d.s.Read(off, b); err != nil {
		d.t.Fatalf("read %d: %v", off, err)
	}
	return b[0]
}

func newUART(t *testing.T) (driver, *countIRQ, *bytes.Buffer) {
	irq := &countIRQ{}
	var out bytes.Buffer
	return driver{t, New(irq, &out)}, irq, &out
}

func TestResetState(t *testing.T) {
	d, irq, _ := newUART(t)
	tests := []struct {
		reg  uint64
		want byte
	}{
		{RegIER, 0}, {RegIIR, IIRNone}, {RegLCR, 0x03}, {RegMCR, MCROUT2},
		{RegLSR, LSRTHREmpty | LSRTxEmpty}, {RegMSR, MSRCTS | MSRDSR | MSRDCD}, {RegSCR, 0},
	}
	for _, tt := range tests {
		if got := d.in(tt.reg); got != tt.want {
			t.Errorf("reg %d = %#x, want %#x", tt.reg, got, tt.want)
		}
	}
	if irq.n != 0 {
		t.Errorf("%d interrupts at reset", irq.n)
	}
}

func TestDivisorLatchAndTransmit(t *testing.T) {
	d, irq, out := newUART(t)
	d.out(RegLCR, LCRDLAB|0x03)
	d.out(RegData, 0x0c) // 9600 baud
	d.out(RegIER, 0x00)
	if d.in(RegData) != 0x0c || d.in(RegIER) != 0 {
		t.Fatalf("divisor latch not readable")
	}
	d.out(RegLCR, 0x03)
	if d.in(RegIER) != 0 {
		t.Fatalf("IER changed by DLM write")
	}
	for _, c := range []byte("ok\n") {
		for d.in(RegLSR)&LSRTHREmpty == 0 {
		}
		d.out(RegData, c)
	}
	if out.String() != "ok\n" {
		t.Fatalf("output %q", out.String())
	}
	if irq.n != 0 {
		t.Fatalf("polled output raised %d interrupts", irq.n)
	}
	if st := d.s.Save(); st.DLL != 0x0c || st.DLM != 0 {
		t.Fatalf("divisor %#x/%#x", st.DLL, st.DLM)
	}
}

func TestTHREInterrupt(t *testing.T) {
	d, irq, out := newUART(t)
	d.out(RegFCR, FCREnable|FCRClearRx|FCRClearTx)
	d.out(RegIER, IERTHRE)
	if irq.n != 1 {
		t.Fatalf("enabling THRE: %d interrupts, want 1", irq.n)
	}
	if got := d.in(RegIIR); got != IIRTHRE|IIRFIFOBits {
		t.Fatalf("IIR = %#x, want THRE with FIFO bits", got)
	}
	if got := d.in(RegIIR); got != IIRNone|IIRFIFOBits {
		t.Fatalf("IIR after reading THRE = %#x, want none", got)
	}
	// The transmit path: each byte empties THR again.
	d.out(RegData, 'a')
	if irq.n != 2 || d.in(RegIIR)&0x0f != IIRTHRE {
		t.Fatalf("after a byte: %d interrupts", irq.n)
	}
	// Two bytes without reading IIR in between: the line stays up, one edge.
	d.out(RegData, 'b')
	d.out(RegData, 'c')
	if irq.n != 3 {
		t.Fatalf("burst: %d interrupts, want 3", irq.n)
	}
	// Stop transmitting: disabling THRE drops the line.
	d.out(RegIER, 0)
	if d.in(RegIIR)&0x0f != IIRNone {
		t.Fatalf("THRE pending with IER.THRE off")
	}
	if out.String() != "abc" {
		t.Fatalf("output %q", out.String())
	}
}

// TestLinuxTHRETest replays serial8250_do_startup's check for UARTs that
// do not raise THRE when it is enabled (UART_BUG_THRE).
func TestLinuxTHRETest(t *testing.T) {
	d, _, _ := newUART(t)
	d.out(RegIER, IERTHRE)
	d.in(RegLSR)
	iir1 := d.in(RegIIR)
	d.out(RegIER, 0)
	d.out(RegIER, IERTHRE)
	iir := d.in(RegIIR)
	d.out(RegIER, 0)
	if iir1&IIRNone != 0 || iir&IIRNone != 0 {
		t.Fatalf("THRE not raised on enable: iir1 %#x iir %#x", iir1, iir)
	}
}

func TestReceive(t *testing.T) {
	d, irq, _ := newUART(t)
	d.out(RegIER, IERRDA)
	if n, err := d.s.Enqueue([]byte("hi")); n != 2 || err != nil {
		t.Fatalf("Enqueue = %d, %v", n, err)
	}
	if irq.n != 1 {
		t.Fatalf("%d interrupts, want 1", irq.n)
	}
	if d.in(RegIIR) != IIRRDA || d.in(RegLSR)&LSRDataReady == 0 {
		t.Fatalf("RDA not reported")
	}
	d.s.Enqueue([]byte("!"))
	if irq.n != 1 {
		t.Fatalf("more data while the line is up raised another edge")
	}
	var got []byte
	for d.in(RegLSR)&LSRDataReady != 0 {
		got = append(got, d.in(RegData))
	}
	if string(got) != "hi!" || d.in(RegIIR) != IIRNone {
		t.Fatalf("read %q, IIR %#x", got, d.in(RegIIR))
	}
	select {
	case <-d.s.Drained():
	default:
		t.Fatalf("Drained not signalled")
	}
	// Without IER.RDA data raises nothing.
	d.out(RegIER, 0)
	d.s.Enqueue([]byte("x"))
	if irq.n != 1 {
		t.Fatalf("interrupt with RDA disabled")
	}
}

func TestPriority(t *testing.T) {
	d, _, _ := newUART(t)
	d.s.Enqueue([]byte("x"))
	d.out(RegIER, IERRDA|IERTHRE)
	if got := d.in(RegIIR); got != IIRRDA {
		t.Fatalf("IIR = %#x, want RDA before THRE", got)
	}
	d.in(RegData)
	if got := d.in(RegIIR); got != IIRTHRE {
		t.Fatalf("IIR = %#x, want THRE once data is read", got)
	}
	if got := d.in(RegIIR); got != IIRNone {
		t.Fatalf("IIR = %#x, want none", got)
	}
}

func TestFIFOBound(t *testing.T) {
	d, _, _ := newUART(t)
	n, err := d.s.Enqueue(make([]byte, FIFOSize+10))
	if n != FIFOSize || !errors.Is(err, ErrFIFOFull) {
		t.Fatalf("Enqueue = %d, %v", n, err)
	}
	if d.s.FIFOSpace() != 0 {
		t.Fatalf("space %d", d.s.FIFOSpace())
	}
	d.out(RegFCR, FCREnable|FCRClearRx)
	if d.s.FIFOSpace() != FIFOSize || d.in(RegLSR)&LSRDataReady != 0 {
		t.Fatalf("FCR did not clear the receive FIFO")
	}
}

func TestLoopback(t *testing.T) {
	d, _, out := newUART(t)
	// The 8250 driver's loopback existence test.
	d.out(RegMCR, MCRLoop|MCROUT2|MCRRTS)
	if got := d.in(RegMSR) & 0xf0; got != MSRCTS|MSRDCD {
		t.Fatalf("MSR in loopback = %#x, want 0x90", got)
	}
	d.out(RegData, 'z')
	if out.Len() != 0 || d.in(RegData) != 'z' {
		t.Fatalf("loopback byte went out (%q)", out.String())
	}
	d.out(RegMCR, MCROUT2)
	if got := d.in(RegMSR); got&0xf0 != MSRCTS|MSRDSR|MSRDCD || got&msrDeltas == 0 {
		t.Fatalf("MSR after loopback = %#x", got)
	}
	if got := d.in(RegMSR); got&msrDeltas != 0 {
		t.Fatalf("MSR deltas not cleared by reading: %#x", got)
	}
}

func TestIERScratchTest(t *testing.T) {
	d, _, _ := newUART(t)
	d.out(RegIER, 0xff)
	if got := d.in(RegIER); got != 0x0f {
		t.Fatalf("IER = %#x, want 0x0f", got)
	}
	d.out(RegSCR, 0x5a)
	if d.in(RegSCR) != 0x5a {
		t.Fatalf("scratch")
	}
}

func TestWideAccessIgnored(t *testing.T) {
	d, _, out := newUART(t)
	if err := d.s.Write(RegData, []byte{'a', 'b'}); err != nil || out.Len() != 0 {
		t.Fatalf("wide write: %v, out %q", err, out.String())
	}
	b := []byte{1, 2, 3, 4}
	if err := d.s.Read(RegLSR, b); err != nil || !bytes.Equal(b, make([]byte, 4)) {
		t.Fatalf("wide read: %v, %x", err, b)
	}
	if err := d.s.Read(NumRegs, b[:1]); err != nil {
		t.Fatalf("out-of-range read: %v", err)
	}
}

func TestInterruptError(t *testing.T) {
	d, irq, _ := newUART(t)
	irq.err = errors.New("irqfd closed")
	if err := d.s.Write(RegIER, []byte{IERTHRE}); !errors.Is(err, ErrInterrupt) {
		t.Fatalf("err = %v", err)
	}
}

func TestSaveRestore(t *testing.T) {
	d, _, _ := newUART(t)
	d.out(RegLCR, 0x1b)
	d.out(RegIER, IERRDA|IERTHRE)
	d.out(RegFCR, FCREnable)
	d.out(RegSCR, 7)
	d.s.Enqueue([]byte("abc"))
	st := d.s.Save()

	d2, irq2, _ := newUART(t)
	if err := d2.s.Restore(st); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(d2.s.Save(), st) || irq2.n != 0 {
		t.Fatalf("restored %+v, want %+v", d2.s.Save(), st)
	}
	if d2.in(RegData) != 'a' || d.in(RegData) != 'a' {
		t.Fatalf("restored FIFO")
	}
	// The saved state does not alias the device.
	if len(st.Rx) != 3 {
		t.Fatalf("Save aliased the FIFO")
	}
	for _, bad := range []State{{Rx: make([]byte, FIFOSize+1)}, {IER: 0x10}, {MCR: 0x20}} {
		if err := d2.s.Restore(bad); !errors.Is(err, ErrState) {
			t.Errorf("Restore(%+v) = %v", bad, err)
		}
	}
}
