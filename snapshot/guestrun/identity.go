package guestrun

import (
	"errors"
	"fmt"

	tg "github.com/embervm/ember/internal/testguest"
)

// ErrWrongResult: a restored identity guest reported something other than
// what its snapshot state and identity imply.
var ErrWrongResult = errors.New("guestrun: wrong result from a restored guest")

// IdentityProgram is a test guest to snapshot, pool and claim. It fills
// every word of [start, end) with fillValue(address), adding the values up
// in R10, reads GatePort once (the sign that it may be snapshotted; the
// value is ignored) and then waits until the identity page
// (tg.IdentityAddr) holds a non-zero value, which a VMM writes when it
// re-identifies the restored guest. It then reports that value, the sum of
// the words of [start, end) read back from memory and the sum it carried
// in R10, and exits. A restore that loses registers or memory changes the
// last two reports (see ExpectedIdentitySum).
func IdentityProgram(start, end uint64) ([]byte, error) {
	a := tg.NewAsm()
	a.Xor(tg.R10, tg.R10).MovImm(tg.RSI, start).MovImm(tg.RCX, (end-start)/8).MovImm(tg.R8, mixMul)
	a.Label("fill").Mov(tg.RAX, tg.RSI).Imul(tg.RAX, tg.R8).MovImm(tg.RBX, 1).Raw(0x48, 0x09, 0xd8). // or rax, rbx
														Store64(tg.RSI, tg.RAX).Add(tg.R10, tg.RAX).AddImm(tg.RSI, 8).Dec(tg.RCX).Jne("fill")
	a.MovImm(tg.RDX, GatePort).InEAX()
	a.MovImm(tg.RDI, tg.IdentityAddr)
	a.Label("wait").Pause().Load64(tg.RAX, tg.RDI).CmpImm(tg.RAX, 0).Je("wait")
	report(a)
	a.MovImm(tg.RSI, start).MovImm(tg.RCX, (end-start)/8).Xor(tg.RAX, tg.RAX)
	a.Label("sum").AddMem(tg.RAX, tg.RSI).AddImm(tg.RSI, 8).Dec(tg.RCX).Jne("sum")
	report(a)
	a.Mov(tg.RAX, tg.R10)
	report(a)
	exit(a)
	return a.Bytes()
}

// ExpectedIdentitySum is the sum IdentityProgram reports (twice) for
// [start, end).
func ExpectedIdentitySum(start, end uint64) uint64 {
	var sum uint64
	for a := start; a < end; a += 8 {
		sum += fillValue(a)
	}
	return sum
}

// IdentityGuest is an IdentityProgram guest to snapshot: Spec makes it,
// and [Start, End) is the range it fills.
type IdentityGuest struct {
	Spec       Spec
	Start, End uint64
}

// NewIdentityGuest describes an IdentityProgram guest of mem bytes that
// fills the first fillPercent of its memory above tg.DataBase (at least
// one page).
func NewIdentityGuest(mem uint64, fillPercent float64) (*IdentityGuest, error) {
	if mem < tg.MinMemory || mem%4096 != 0 {
		return nil, fmt.Errorf("guestrun: identity guest memory %d: want a multiple of 4 KiB, at least %d", mem, tg.MinMemory)
	}
	if !(fillPercent > 0 && fillPercent <= 100) {
		return nil, fmt.Errorf("guestrun: fill share %v%%: want (0, 100]", fillPercent)
	}
	n := uint64(float64(mem-tg.DataBase)*fillPercent/100) &^ 4095
	n = max(n, 4096)
	code, err := IdentityProgram(tg.DataBase, tg.DataBase+n)
	if err != nil {
		return nil, err
	}
	return &IdentityGuest{Spec: Spec{Code: code, Memory: mem}, Start: tg.DataBase, End: tg.DataBase + n}, nil
}

// Check verifies what a restored copy of the guest reported after it was
// given the identity nonce nonceHex: the identity, then the sum of the
// filled memory twice (read back from memory, and carried in a register
// across the snapshot).
func (g *IdentityGuest) Check(reports []uint64, nonceHex string) error {
	return CheckIdentityReports(reports, nonceHex, ExpectedIdentitySum(g.Start, g.End))
}

// CheckIdentityReports verifies an IdentityProgram guest's reports against
// the identity nonce it was given and the sum its filled range must have.
func CheckIdentityReports(reports []uint64, nonceHex string, sum uint64) error {
	id, err := tg.IdentityValue(nonceHex)
	if err != nil {
		return err
	}
	if len(reports) != 3 || reports[0] != id || reports[1] != sum || reports[2] != sum {
		return fmt.Errorf("%w: reported %#x, want [%#x %#x %#x]", ErrWrongResult, reports, id, sum, sum)
	}
	return nil
}
