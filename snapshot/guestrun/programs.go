package guestrun

import (
	tg "github.com/embervm/ember/internal/testguest"
)

// mixMul is the multiplier of MixProgram's recurrence.
const mixMul = 0x9e3779b97f4a7c15

func report(a *tg.Asm) {
	a.Mov(tg.RBX, tg.RAX)
	a.MovImm(tg.RDX, tg.PortReportLo).OutEAX()
	a.Mov(tg.RAX, tg.RBX).Shr(tg.RAX, 32)
	a.MovImm(tg.RDX, tg.PortReportHi).OutEAX()
}

func exit(a *tg.Asm) {
	a.MovImm(tg.RAX, 0).MovImm(tg.RDX, tg.PortExit).OutEAX()
	a.Label("hang").Jmp("hang")
}

// MixProgram makes passes over the uint64 words at start, start+step, ...
// below start+n (step a multiple of 8): in pass p (1-based) each such word
// w at address a becomes w*mixMul + p + a, and
// the new value is added to a running sum, which it reports at the end.
// Every word depends on its own history and address, so a restore that
// loses, misplaces or zeroes a page changes the result.
func MixProgram(start, n, step, passes uint64) ([]byte, error) {
	a := tg.NewAsm()
	a.Xor(tg.R10, tg.R10).MovImm(tg.R8, mixMul).MovImm(tg.R11, 1).MovImm(tg.R12, passes+1)
	a.Label("pass").MovImm(tg.RSI, start).MovImm(tg.RCX, n/step)
	a.Label("loop").Load64(tg.RAX, tg.RSI).Imul(tg.RAX, tg.R8).Add(tg.RAX, tg.R11).Add(tg.RAX, tg.RSI).
		Store64(tg.RSI, tg.RAX).Add(tg.R10, tg.RAX).AddImm(tg.RSI, int32(step)).Dec(tg.RCX).Jne("loop")
	a.Inc(tg.R11).Cmp(tg.R11, tg.R12).Jne("pass")
	a.Mov(tg.RAX, tg.R10)
	report(a)
	exit(a)
	return a.Bytes()
}

// ExpectedMix is what MixProgram reports when run from zeroed memory.
func ExpectedMix(start, n, step, passes uint64) uint64 {
	var sum uint64
	for a := start; a < start+n/step*step; a += step {
		var w uint64
		for p := uint64(1); p <= passes; p++ {
			w = w*mixMul + p + a
			sum += w
		}
	}
	return sum
}

// fillValue is what WorkingSetProgram's first phase stores at address a.
func fillValue(a uint64) uint64 { return a*mixMul | 1 }

// WorkingSetProgram has two phases. The first fills every word of
// [start, end) with fillValue(address), so the memory file has no holes
// there; then the guest waits at the gate (reads GatePort until it reads
// non-zero). A snapshot is taken there. The second phase is the working
// set: for each of blocks blocks of blockPages pages, strideBytes apart
// from start, it adds the first word of each page to a sum and writes the
// sum back, then reports the sum.
func WorkingSetProgram(start, end, blocks, blockPages, strideBytes uint64) ([]byte, error) {
	a := tg.NewAsm()
	// Phase 1: fill.
	a.MovImm(tg.RSI, start).MovImm(tg.RCX, (end-start)/8).MovImm(tg.R8, mixMul)
	a.Label("fill").Mov(tg.RAX, tg.RSI).Imul(tg.RAX, tg.R8).MovImm(tg.RBX, 1).Raw(0x48, 0x09, 0xd8). // or rax, rbx
														Store64(tg.RSI, tg.RAX).AddImm(tg.RSI, 8).Dec(tg.RCX).Jne("fill")
	// Gate.
	a.MovImm(tg.RDX, GatePort)
	a.Label("gate").InEAX().CmpImm(tg.RAX, 0).Je("gate")
	// Phase 2: working set.
	a.Xor(tg.R10, tg.R10).MovImm(tg.RDI, start).MovImm(tg.R9, blocks)
	a.Label("block").Mov(tg.RSI, tg.RDI).MovImm(tg.RCX, blockPages)
	a.Label("page").AddMem(tg.R10, tg.RSI).Store64(tg.RSI, tg.R10).AddImm(tg.RSI, 4096).Dec(tg.RCX).Jne("page")
	a.MovImm(tg.RAX, strideBytes).Add(tg.RDI, tg.RAX).Dec(tg.R9).Jne("block")
	a.Mov(tg.RAX, tg.R10)
	report(a)
	exit(a)
	return a.Bytes()
}

// ExpectedWorkingSet is what WorkingSetProgram reports.
func ExpectedWorkingSet(start, blocks, blockPages, strideBytes uint64) uint64 {
	var sum uint64
	for b := uint64(0); b < blocks; b++ {
		for p := uint64(0); p < blockPages; p++ {
			sum += fillValue(start + b*strideBytes + p*4096)
		}
	}
	return sum
}
