package i8042

import (
	"errors"
	"testing"
)

type countIRQ struct {
	n   int
	err error
}

func (c *countIRQ) Trigger() error { c.n++; return c.err }

type guest struct {
	t *testing.T
	d *Device
}

func (g guest) out(off uint64, v byte) {
	g.t.Helper()
	if err := g.d.Write(off, []byte{v}); err != nil {
		g.t.Fatal(err)
	}
}

func (g guest) in(off uint64) byte {
	g.t.Helper()
	b := []byte{0xee}
	if err := g.d.Read(off, b); err != nil {
		g.t.Fatal(err)
	}
	return b[0]
}

// command sends a controller command and reads its reply, polling OBF as
// i8042_command does.
func (g guest) command(c byte) (byte, bool) {
	g.out(CmdOffset, c)
	if g.in(CmdOffset)&StatusOBF == 0 {
		return 0, false
	}
	return g.in(DataOffset), true
}

func TestReset(t *testing.T) {
	tests := []struct {
		name string
		seq  func(g guest)
	}{
		{"pulse reset 0xfe", func(g guest) { g.out(CmdOffset, CmdPulseReset) }},
		{"output port reset line low", func(g guest) { g.out(CmdOffset, CmdWriteOutput); g.out(DataOffset, 0xfe) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resets := 0
			g := guest{t, New(nil, func() { resets++ })}
			tt.seq(g)
			if resets != 1 {
				t.Fatalf("%d resets, want 1", resets)
			}
		})
	}
	// Writing the output port with the reset line high does nothing.
	resets := 0
	g := guest{t, New(nil, func() { resets++ })}
	g.out(CmdOffset, CmdWriteOutput)
	g.out(DataOffset, 0x03)
	if resets != 0 {
		t.Fatalf("reset on output port 0x03")
	}
}

func TestLinuxProbe(t *testing.T) {
	irq := &countIRQ{}
	g := guest{t, New(irq, nil)}
	// i8042_controller_check: flush the output buffer.
	if g.in(CmdOffset)&StatusOBF != 0 {
		t.Fatalf("output buffer full at reset")
	}
	tests := []struct {
		cmd  byte
		want byte
	}{
		{CmdSelfTest, selfTestOK},
		{CmdTestKbd, portTestOK},
		{CmdTestAux, auxNoDevice},
	}
	for _, tt := range tests {
		got, ok := g.command(tt.cmd)
		if !ok || got != tt.want {
			t.Errorf("command %#x = %#x, %v; want %#x", tt.cmd, got, ok, tt.want)
		}
	}
	// Read-modify-write the command byte.
	ctr, ok := g.command(CmdReadCTR)
	if !ok || ctr&CTRSysFlag == 0 {
		t.Fatalf("CTR = %#x, %v", ctr, ok)
	}
	g.out(CmdOffset, CmdWriteCTR)
	g.out(DataOffset, ctr&^CTRKbdInt)
	if got, _ := g.command(CmdReadCTR); got != ctr&^CTRKbdInt {
		t.Fatalf("CTR after write = %#x", got)
	}
	n := irq.n
	g.command(CmdSelfTest)
	if irq.n != n {
		t.Fatalf("interrupt with CTR.KbdInt clear")
	}
	// Keyboard reset through the data port: ACK, then self test passed.
	g.out(CmdOffset, CmdWriteCTR)
	g.out(DataOffset, ctr)
	g.out(DataOffset, 0xff)
	if a, b := g.in(DataOffset), g.in(DataOffset); a != kbdAck || b != kbdSelfTest {
		t.Fatalf("keyboard reset reply %#x %#x", a, b)
	}
	if g.in(CmdOffset)&StatusOBF != 0 {
		t.Fatalf("OBF after reading every reply")
	}
	if irq.n <= n {
		t.Fatalf("no interrupt for keyboard replies")
	}
	if g.in(2) != 0xff {
		t.Fatalf("undecoded port")
	}
}

func TestInterruptError(t *testing.T) {
	g := guest{t, New(&countIRQ{err: errors.New("down")}, nil)}
	if err := g.d.Write(CmdOffset, []byte{CmdSelfTest}); !errors.Is(err, ErrInterrupt) {
		t.Fatalf("err = %v", err)
	}
}
