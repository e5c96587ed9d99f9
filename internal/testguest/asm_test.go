package testguest

import (
	"bytes"
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// The expected encodings were checked against GNU as / objdump (Intel
// syntax); TestAsmObjdump re-checks them where binutils is installed.
var encodings = []struct {
	name string
	emit func(a *Asm)
	want []byte
	dis  string // objdump -M intel mnemonic text
}{
	{"mov rax, imm64", func(a *Asm) { a.MovImm(RAX, 0x1122334455667788) }, []byte{0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}, "movabs rax,0x1122334455667788"},
	{"mov r9, imm64", func(a *Asm) { a.MovImm(R9, 1) }, []byte{0x49, 0xb9, 1, 0, 0, 0, 0, 0, 0, 0}, "movabs r9,0x1"},
	{"mov rbx, rax", func(a *Asm) { a.Mov(RBX, RAX) }, []byte{0x48, 0x89, 0xc3}, "mov rbx,rax"},
	{"mov r12, r8", func(a *Asm) { a.Mov(R12, R8) }, []byte{0x4d, 0x89, 0xc4}, "mov r12,r8"},
	{"add r10, r11", func(a *Asm) { a.Add(R10, R11) }, []byte{0x4d, 0x01, 0xda}, "add r10,r11"},
	{"add rax, 0x1000", func(a *Asm) { a.AddImm(RAX, 0x1000) }, []byte{0x48, 0x81, 0xc0, 0x00, 0x10, 0, 0}, "add rax,0x1000"},
	{"sub rcx, 16", func(a *Asm) { a.SubImm(RCX, 16) }, []byte{0x48, 0x81, 0xe9, 0x10, 0, 0, 0}, "sub rcx,0x10"},
	{"cmp r13, r8", func(a *Asm) { a.Cmp(R13, R8) }, []byte{0x4d, 0x39, 0xc5}, "cmp r13,r8"},
	{"cmp rcx, 0x100", func(a *Asm) { a.CmpImm(RCX, 0x100) }, []byte{0x48, 0x81, 0xf9, 0, 1, 0, 0}, "cmp rcx,0x100"},
	{"inc r15", func(a *Asm) { a.Inc(R15) }, []byte{0x49, 0xff, 0xc7}, "inc r15"},
	{"dec rcx", func(a *Asm) { a.Dec(RCX) }, []byte{0x48, 0xff, 0xc9}, "dec rcx"},
	{"mov rax, [r12]", func(a *Asm) { a.Load64(RAX, R12) }, []byte{0x49, 0x8b, 0x04, 0x24}, "mov rax,QWORD PTR [r12]"},
	{"mov r9, [rbp]", func(a *Asm) { a.Load64(R9, RBP) }, []byte{0x4c, 0x8b, 0x4d, 0x00}, "mov r9,QWORD PTR [rbp+0x0]"},
	{"mov [rsp], r10", func(a *Asm) { a.Store64(RSP, R10) }, []byte{0x4c, 0x89, 0x14, 0x24}, "mov QWORD PTR [rsp],r10"},
	{"mov eax, [rsi]", func(a *Asm) { a.Load32(RAX, RSI) }, []byte{0x8b, 0x06}, "mov eax,DWORD PTR [rsi]"},
	{"mov [rdi], eax", func(a *Asm) { a.Store32(RDI, RAX) }, []byte{0x89, 0x07}, "mov DWORD PTR [rdi],eax"},
	{"mov r8d, [r12]", func(a *Asm) { a.Load32(R8, R12) }, []byte{0x45, 0x8b, 0x04, 0x24}, "mov r8d,DWORD PTR [r12]"},
	{"imul r9, r10", func(a *Asm) { a.Imul(R9, R10) }, []byte{0x4d, 0x0f, 0xaf, 0xca}, "imul r9,r10"},
	{"add r8, [r13]", func(a *Asm) { a.AddMem(R8, R13) }, []byte{0x4d, 0x03, 0x45, 0x00}, "add r8,QWORD PTR [r13+0x0]"},
	{"shr rax, 32", func(a *Asm) { a.Shr(RAX, 32) }, []byte{0x48, 0xc1, 0xe8, 0x20}, "shr rax,0x20"},
	{"xor r8, r8", func(a *Asm) { a.Xor(R8, R8) }, []byte{0x4d, 0x31, 0xc0}, "xor r8,r8"},
	{"out dx, eax", func(a *Asm) { a.OutEAX() }, []byte{0xef}, "out dx,eax"},
	{"movq xmm0, rax", func(a *Asm) { a.MovqToXMM(0, RAX) }, []byte{0x66, 0x48, 0x0f, 0x6e, 0xc0}, "movq xmm0,rax"},
	{"movq xmm9, r10", func(a *Asm) { a.MovqToXMM(9, R10) }, []byte{0x66, 0x4d, 0x0f, 0x6e, 0xca}, "movq xmm9,r10"},
	{"movq rax, xmm0", func(a *Asm) { a.MovqFromXMM(RAX, 0) }, []byte{0x66, 0x48, 0x0f, 0x7e, 0xc0}, "movq rax,xmm0"},
	{"movq r8, xmm15", func(a *Asm) { a.MovqFromXMM(R8, 15) }, []byte{0x66, 0x4d, 0x0f, 0x7e, 0xf8}, "movq r8,xmm15"},
	{"paddq xmm0, xmm1", func(a *Asm) { a.Paddq(0, 1) }, []byte{0x66, 0x0f, 0xd4, 0xc1}, "paddq xmm0,xmm1"},
	{"paddq xmm7, xmm15", func(a *Asm) { a.Paddq(7, 15) }, []byte{0x66, 0x41, 0x0f, 0xd4, 0xff}, "paddq xmm7,xmm15"},
	{"punpcklqdq xmm8, xmm2", func(a *Asm) { a.Punpcklqdq(8, 2) }, []byte{0x66, 0x44, 0x0f, 0x6c, 0xc2}, "punpcklqdq xmm8,xmm2"},
	{"punpckhqdq xmm3, xmm3", func(a *Asm) { a.Punpckhqdq(3, 3) }, []byte{0x66, 0x0f, 0x6d, 0xdb}, "punpckhqdq xmm3,xmm3"},
}

func TestEncodings(t *testing.T) {
	for _, tt := range encodings {
		a := NewAsm()
		tt.emit(a)
		got, err := a.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("%s: got % x, want % x", tt.name, got, tt.want)
		}
	}
}

// TestAsmObjdump disassembles every encoding with binutils, when present,
// so the table above cannot drift from what a real assembler means.
func TestAsmObjdump(t *testing.T) {
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Skip("objdump (binutils) not installed; TestEncodings still checks the bytes")
	}
	for _, tt := range encodings {
		f := t.TempDir() + "/code.bin"
		if err := writeFile(f, tt.want); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(objdump, "-D", "-b", "binary", "-m", "i386:x86-64", "-M", "intel", f).CombinedOutput()
		if err != nil {
			t.Fatalf("objdump: %v\n%s", err, out)
		}
		norm := strings.Join(strings.Fields(string(out)), " ")
		if !strings.Contains(norm, strings.Join(strings.Fields(tt.dis), " ")) {
			t.Errorf("%s: objdump says\n%s", tt.name, out)
		}
	}
}

func TestLabels(t *testing.T) {
	a := NewAsm()
	a.Label("top").Inc(RAX).Jne("top").Jmp("end").Label("end")
	code, err := a.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	// jne at 3: 0f 85 rel32 = 0 - 9 = -9; jmp at 9: e9 rel32 = 14 - 14 = 0.
	want := []byte{0x48, 0xff, 0xc0, 0x0f, 0x85, 0xf7, 0xff, 0xff, 0xff, 0xe9, 0, 0, 0, 0}
	if !bytes.Equal(code, want) {
		t.Errorf("got % x want % x", code, want)
	}
	bad := NewAsm().Jmp("nowhere").Label("x").Label("x")
	if _, err := bad.Bytes(); !errors.Is(err, ErrAsm) || !strings.Contains(err.Error(), "nowhere") || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("bad program error: %v", err)
	}
}
