package testguest

// Programs are assembled for CodeBase. Each ends by writing its exit code to
// PortExit; values it computes go out through PortReportLo/Hi.

// report emits code that reports the 64-bit value in RAX (clobbers RDX, RBX).
func report(a *Asm) {
	a.Mov(RBX, RAX)
	a.MovImm(RDX, PortReportLo).OutEAX()
	a.Mov(RAX, RBX).Shr(RAX, 32)
	a.MovImm(RDX, PortReportHi).OutEAX()
	a.Mov(RAX, RBX)
}

// exit emits code that ends the guest with code.
func exit(a *Asm, code uint32) {
	a.MovImm(RAX, uint64(code)).MovImm(RDX, PortExit).OutEAX()
	a.Label("hang").Jmp("hang")
}

// SumProgram sums the little-endian uint64 words of [start, start+n) and
// reports the sum. n must be a multiple of 8.
func SumProgram(start, n uint64) ([]byte, error) {
	a := NewAsm()
	a.MovImm(RSI, start).MovImm(RCX, n/8).Xor(RAX, RAX)
	a.Label("loop").AddMem(RAX, RSI).AddImm(RSI, 8).Dec(RCX).Jne("loop")
	report(a)
	exit(a, 0)
	return a.Bytes()
}

// FillProgram writes word i = i*mul+add for each uint64 word of
// [start, start+n), then reports the sum of the words.
func FillProgram(start, n, mul, add uint64) ([]byte, error) {
	a := NewAsm()
	a.MovImm(RSI, start).MovImm(RCX, n/8).Xor(RDI, RDI).MovImm(R8, mul).MovImm(R9, add).Xor(R10, R10)
	a.Label("loop").Mov(RAX, RDI).Imul(RAX, R8).Add(RAX, R9).Store64(RSI, RAX).Add(R10, RAX)
	a.Inc(RDI).AddImm(RSI, 8).Dec(RCX).Jne("loop")
	a.Mov(RAX, R10)
	report(a)
	exit(a, 0)
	return a.Bytes()
}

// ExpectedFillSum is the sum FillProgram reports for n bytes.
func ExpectedFillSum(n, mul, add uint64) uint64 {
	var s uint64
	for i := uint64(0); i < n/8; i++ {
		s += i*mul + add
	}
	return s
}

// CountProgram adds 1..n into RAX, storing the running total at DataBase
// after every step, then reports the total (n*(n+1)/2 mod 2^64) and the
// count. It runs long enough to be paused and saved mid-way.
func CountProgram(n uint64) ([]byte, error) {
	a := NewAsm()
	a.Xor(RAX, RAX).Xor(RCX, RCX).MovImm(RDI, DataBase).MovImm(R8, n)
	a.Label("loop").Inc(RCX).Add(RAX, RCX).Store64(RDI, RAX).Cmp(RCX, R8).Jne("loop")
	a.Mov(R9, RCX)
	report(a)
	a.Mov(RAX, R9)
	report(a)
	exit(a, 0)
	return a.Bytes()
}

// MMIOProgram reads the MMIO device's magic register and reports it, writes
// the values 1..3 (times 0x1111) to registers 1..3, reads them back and
// reports their sum.
func MMIOProgram() ([]byte, error) {
	a := NewAsm()
	a.MovImm(RSI, MMIOBase).Load32(RAX, RSI)
	report(a)
	a.MovImm(R8, 0).MovImm(R9, 0)
	for i := uint64(1); i <= 3; i++ {
		a.MovImm(RDI, MMIOBase+8*i).MovImm(RAX, 0x1111*i).Store64(RDI, RAX)
	}
	for i := uint64(1); i <= 3; i++ {
		a.MovImm(RDI, MMIOBase+8*i).Load64(RAX, RDI).Add(R9, RAX)
	}
	a.Mov(RAX, R9)
	report(a)
	exit(a, 0)
	return a.Bytes()
}

// SpinProgram loops n times and exits. Run at CPL3 and CPL0 it shows
// whether KVM runs guest kernel code natively.
func SpinProgram(n uint64) ([]byte, error) {
	a := NewAsm()
	a.MovImm(RCX, n)
	a.Label("loop").Dec(RCX).Jne("loop")
	exit(a, 0)
	return a.Bytes()
}

// PingProgram writes PortPing n times (n PIO exits) and exits.
func PingProgram(n uint64) ([]byte, error) {
	a := NewAsm()
	a.MovImm(RCX, n).MovImm(RDX, PortPing)
	a.Label("loop").OutEAX().Dec(RCX).Jne("loop")
	exit(a, 0)
	return a.Bytes()
}

// WildWriteProgram writes to addr, which should be outside guest memory
// and every device.
func WildWriteProgram(addr uint64) ([]byte, error) {
	a := NewAsm()
	a.MovImm(RDI, addr).MovImm(RAX, 0xdead).Store64(RDI, RAX)
	exit(a, 0)
	return a.Bytes()
}

// SSEProgram keeps its whole state in SSE registers while it loops: xmm8+i
// holds the increment {i+1, (i+1)<<32} and xmm0+i accumulates it n times
// (i = 0..7). Then it reports each accumulator's low and high quadword, 16
// values in all (see ExpectedSSE). A vCPU whose SSE registers are not
// saved and restored faithfully reports something else.
func SSEProgram(n uint64) ([]byte, error) {
	a := NewAsm()
	for i := XMM(0); i < 8; i++ {
		k := uint64(i) + 1
		a.MovImm(RAX, k).MovqToXMM(8+i, RAX)
		a.MovImm(RAX, k<<32).MovqToXMM(i, RAX).Punpcklqdq(8+i, i)
		a.Xor(RAX, RAX).MovqToXMM(i, RAX)
	}
	a.MovImm(RCX, n)
	a.Label("loop")
	for i := XMM(0); i < 8; i++ {
		a.Paddq(i, 8+i)
	}
	a.Dec(RCX).Jne("loop")
	for i := XMM(0); i < 8; i++ {
		a.MovqFromXMM(RAX, i)
		report(a)
		a.Punpckhqdq(i, i).MovqFromXMM(RAX, i)
		report(a)
	}
	exit(a, 0)
	return a.Bytes()
}

// ExpectedSSE is what SSEProgram(n) reports.
func ExpectedSSE(n uint64) []uint64 {
	var out []uint64
	for k := uint64(1); k <= 8; k++ {
		out = append(out, k*n, (k<<32)*n)
	}
	return out
}

// MMIOLoopProgram makes n rounds of MMIO exits: each reads the MMIO
// device's register 0 and writes the round number (n down to 1) to its
// register 1. A run, however often it is paused, saved and restored, makes
// exactly n reads and n writes.
func MMIOLoopProgram(n uint64) ([]byte, error) {
	a := NewAsm()
	a.MovImm(RCX, n).MovImm(RSI, MMIOBase).MovImm(RDI, MMIOBase+8)
	a.Label("loop").Load32(RAX, RSI).Store64(RDI, RCX).Dec(RCX).Jne("loop")
	exit(a, 0)
	return a.Bytes()
}
