package testguest

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Reg is an x86-64 general-purpose register, numbered as in instruction
// encodings.
type Reg uint8

// The sixteen 64-bit registers.
const (
	RAX Reg = iota
	RCX
	RDX
	RBX
	RSP
	RBP
	RSI
	RDI
	R8
	R9
	R10
	R11
	R12
	R13
	R14
	R15
)

// ErrAsm reports a program the assembler cannot encode (an undefined or
// duplicate label, a jump out of range).
var ErrAsm = errors.New("testguest: assembler")

// Asm is a tiny x86-64 assembler for test guests: the handful of
// instructions their loops need, with labels and 32-bit relative jumps.
// Errors are collected and returned by Bytes.
type Asm struct {
	buf    []byte
	labels map[string]int
	fixups []fixup
	errs   []error
}

type fixup struct {
	at    int // offset of the rel32 field
	label string
}

// NewAsm returns an empty program.
func NewAsm() *Asm { return &Asm{labels: map[string]int{}} }

// Len returns the program size so far.
func (a *Asm) Len() int { return len(a.buf) }

func (a *Asm) emit(b ...byte) { a.buf = append(a.buf, b...) }

func (a *Asm) imm32(v int32) {
	a.buf = binary.LittleEndian.AppendUint32(a.buf, uint32(v))
}

// rex emits a REX prefix: w for 64-bit operand size, r extends ModRM.reg, b
// extends ModRM.rm. It emits nothing when no bit is needed.
func (a *Asm) rex(w bool, r, b Reg) {
	p := byte(0x40)
	if w {
		p |= 8
	}
	if r >= 8 {
		p |= 4
	}
	if b >= 8 {
		p |= 1
	}
	if p != 0x40 {
		a.emit(p)
	}
}

func modrmReg(reg, rm Reg) byte { return 0xc0 | byte(reg&7)<<3 | byte(rm&7) }

// rr emits op with a register-to-register ModRM (reg field src, rm dst).
func (a *Asm) rr(w bool, op []byte, reg, rm Reg) {
	a.rex(w, reg, rm)
	a.emit(op...)
	a.emit(modrmReg(reg, rm))
}

// mem emits op with a [base] memory operand; rsp/r12 need a SIB byte and
// rbp/r13 a zero displacement.
func (a *Asm) mem(w bool, op []byte, reg, base Reg) {
	a.rex(w, reg, base)
	a.emit(op...)
	switch base & 7 {
	case 4:
		a.emit(byte(reg&7)<<3|4, 0x24)
	case 5:
		a.emit(0x40|byte(reg&7)<<3|5, 0)
	default:
		a.emit(byte(reg&7)<<3 | byte(base&7))
	}
}

// MovImm loads a 64-bit immediate: mov r, imm64.
func (a *Asm) MovImm(r Reg, v uint64) *Asm {
	a.rex(true, 0, r)
	a.emit(0xb8 + byte(r&7))
	a.buf = binary.LittleEndian.AppendUint64(a.buf, v)
	return a
}

// Mov copies a register: mov dst, src.
func (a *Asm) Mov(dst, src Reg) *Asm { a.rr(true, []byte{0x89}, src, dst); return a }

// Add adds registers: add dst, src.
func (a *Asm) Add(dst, src Reg) *Asm { a.rr(true, []byte{0x01}, src, dst); return a }

// Xor: xor dst, src.
func (a *Asm) Xor(dst, src Reg) *Asm { a.rr(true, []byte{0x31}, src, dst); return a }

// Cmp compares registers (flags of a - b): cmp a, b.
func (a *Asm) Cmp(x, y Reg) *Asm { a.rr(true, []byte{0x39}, y, x); return a }

// Imul multiplies: imul dst, src.
func (a *Asm) Imul(dst, src Reg) *Asm { a.rr(true, []byte{0x0f, 0xaf}, dst, src); return a }

func (a *Asm) grp1(ext Reg, r Reg, v int32) {
	a.rex(true, 0, r)
	a.emit(0x81, modrmReg(ext, r))
	a.imm32(v)
}

// AddImm: add r, imm32 (sign-extended).
func (a *Asm) AddImm(r Reg, v int32) *Asm { a.grp1(0, r, v); return a }

// SubImm: sub r, imm32 (sign-extended).
func (a *Asm) SubImm(r Reg, v int32) *Asm { a.grp1(5, r, v); return a }

// CmpImm: cmp r, imm32 (sign-extended).
func (a *Asm) CmpImm(r Reg, v int32) *Asm { a.grp1(7, r, v); return a }

// Inc: inc r.
func (a *Asm) Inc(r Reg) *Asm { a.rr(true, []byte{0xff}, 0, r); return a }

// Dec: dec r.
func (a *Asm) Dec(r Reg) *Asm { a.rr(true, []byte{0xff}, 1, r); return a }

// Shr: shr r, n.
func (a *Asm) Shr(r Reg, n uint8) *Asm { a.rr(true, []byte{0xc1}, 5, r); a.emit(n); return a }

// Shl: shl r, n.
func (a *Asm) Shl(r Reg, n uint8) *Asm { a.rr(true, []byte{0xc1}, 4, r); a.emit(n); return a }

// Load64: mov dst, qword [base].
func (a *Asm) Load64(dst, base Reg) *Asm { a.mem(true, []byte{0x8b}, dst, base); return a }

// Store64: mov qword [base], src.
func (a *Asm) Store64(base, src Reg) *Asm { a.mem(true, []byte{0x89}, src, base); return a }

// Load32: mov dst32, dword [base] (zero-extends).
func (a *Asm) Load32(dst, base Reg) *Asm { a.mem(false, []byte{0x8b}, dst, base); return a }

// Store32: mov dword [base], src32.
func (a *Asm) Store32(base, src Reg) *Asm { a.mem(false, []byte{0x89}, src, base); return a }

// AddMem: add dst, qword [base].
func (a *Asm) AddMem(dst, base Reg) *Asm { a.mem(true, []byte{0x03}, dst, base); return a }

// OutEAX: out dx, eax.
func (a *Asm) OutEAX() *Asm { a.emit(0xef); return a }

// OutAL: out dx, al.
func (a *Asm) OutAL() *Asm { a.emit(0xee); return a }

// InEAX: in eax, dx.
func (a *Asm) InEAX() *Asm { a.emit(0xed); return a }

// XMM is an SSE register, xmm0..xmm15, numbered as in instruction
// encodings.
type XMM uint8

// sse emits a 66-prefixed 0F-map SSE instruction with a register-to-register
// ModRM: reg names an XMM register, rm an XMM or general register.
func (a *Asm) sse(w bool, op byte, reg, rm uint8) {
	a.emit(0x66)
	a.rex(w, Reg(reg), Reg(rm))
	a.emit(0x0f, op, modrmReg(Reg(reg), Reg(rm)))
}

// MovqToXMM: movq x, r (the 64-bit register into the low quadword; the high
// quadword is zeroed).
func (a *Asm) MovqToXMM(x XMM, r Reg) *Asm { a.sse(true, 0x6e, uint8(x), uint8(r)); return a }

// MovqFromXMM: movq r, x (the low quadword).
func (a *Asm) MovqFromXMM(r Reg, x XMM) *Asm { a.sse(true, 0x7e, uint8(x), uint8(r)); return a }

// Paddq: paddq dst, src (both quadwords).
func (a *Asm) Paddq(dst, src XMM) *Asm { a.sse(false, 0xd4, uint8(dst), uint8(src)); return a }

// Punpcklqdq: punpcklqdq dst, src (dst's high quadword = src's low one).
func (a *Asm) Punpcklqdq(dst, src XMM) *Asm { a.sse(false, 0x6c, uint8(dst), uint8(src)); return a }

// Punpckhqdq: punpckhqdq dst, src (dst's low quadword = dst's high one,
// dst's high quadword = src's high one).
func (a *Asm) Punpckhqdq(dst, src XMM) *Asm { a.sse(false, 0x6d, uint8(dst), uint8(src)); return a }

// Hlt: hlt (privileged: a CPL3 guest that runs it takes #GP).
func (a *Asm) Hlt() *Asm { a.emit(0xf4); return a }

// Pause: pause.
func (a *Asm) Pause() *Asm { a.emit(0xf3, 0x90); return a }

// Raw appends bytes as they are.
func (a *Asm) Raw(b ...byte) *Asm { a.emit(b...); return a }

// Label defines name at the current position.
func (a *Asm) Label(name string) *Asm {
	if _, dup := a.labels[name]; dup {
		a.errs = append(a.errs, fmt.Errorf("%w: duplicate label %q", ErrAsm, name))
	}
	a.labels[name] = len(a.buf)
	return a
}

func (a *Asm) jump(op []byte, label string) *Asm {
	a.emit(op...)
	a.fixups = append(a.fixups, fixup{at: len(a.buf), label: label})
	a.imm32(0)
	return a
}

// Jmp jumps to label.
func (a *Asm) Jmp(label string) *Asm { return a.jump([]byte{0xe9}, label) }

// Jne jumps to label if not equal (ZF=0).
func (a *Asm) Jne(label string) *Asm { return a.jump([]byte{0x0f, 0x85}, label) }

// Je jumps to label if equal (ZF=1).
func (a *Asm) Je(label string) *Asm { return a.jump([]byte{0x0f, 0x84}, label) }

// Jb jumps to label if below, unsigned (CF=1).
func (a *Asm) Jb(label string) *Asm { return a.jump([]byte{0x0f, 0x82}, label) }

// Bytes resolves labels and returns the machine code.
func (a *Asm) Bytes() ([]byte, error) {
	errs := append([]error(nil), a.errs...)
	out := append([]byte(nil), a.buf...)
	for _, f := range a.fixups {
		target, ok := a.labels[f.label]
		if !ok {
			errs = append(errs, fmt.Errorf("%w: undefined label %q", ErrAsm, f.label))
			continue
		}
		rel := int64(target) - int64(f.at+4)
		binary.LittleEndian.PutUint32(out[f.at:], uint32(int32(rel)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
