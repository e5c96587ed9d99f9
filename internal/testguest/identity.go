package testguest

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/embervm/ember/vmm/memory"
)

// WriteIdentity stores the first 8 bytes of a hex nonce at IdentityAddr,
// where IdentityProgram-style guests read it.
func WriteIdentity(mem memory.Accessor, nonceHex string) error {
	b, err := hex.DecodeString(nonceHex)
	if err != nil || len(b) < 8 {
		return fmt.Errorf("testguest: identity nonce must be at least 16 hex digits: %q", nonceHex)
	}
	return mem.WriteAt(b[:8], IdentityAddr)
}

// PrepareIdentity makes a later WriteIdentity cheap: it writes the bytes
// at IdentityAddr back unchanged, so that the host page behind them is
// already the VMM's own and writable (a restored guest's memory is a
// private mapping of its snapshot: the first write copies the page, tens
// of microseconds on hosts with shadow paging).
func PrepareIdentity(mem memory.Accessor) error {
	var b [8]byte
	if err := mem.ReadAt(b[:], IdentityAddr); err != nil {
		return err
	}
	return mem.WriteAt(b[:], IdentityAddr)
}

// IdentityValue decodes the value WriteIdentity stores for nonceHex.
func IdentityValue(nonceHex string) (uint64, error) {
	b, err := hex.DecodeString(nonceHex)
	if err != nil || len(b) < 8 {
		return 0, fmt.Errorf("testguest: bad nonce %q", nonceHex)
	}
	return binary.LittleEndian.Uint64(b[:8]), nil
}

// WaitIdentityProgram spins until the identity page holds a non-zero value
// (so it can be snapshotted, pooled and claimed while waiting), then
// reports that value and the sum of [start, start+n) and exits.
func WaitIdentityProgram(start, n uint64) ([]byte, error) {
	a := NewAsm()
	a.MovImm(RDI, IdentityAddr)
	a.Label("wait").Pause().Load64(RAX, RDI).CmpImm(RAX, 0).Je("wait")
	report(a)
	a.MovImm(RSI, start).MovImm(RCX, n/8).Xor(RAX, RAX)
	a.Label("loop").AddMem(RAX, RSI).AddImm(RSI, 8).Dec(RCX).Jne("loop")
	report(a)
	exit(a, 0)
	return a.Bytes()
}
