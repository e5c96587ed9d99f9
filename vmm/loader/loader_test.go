package loader

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadELF(t *testing.T) {
	text := bytes.Repeat([]byte{0x90}, 300)
	data := []byte("kernel data")
	img := buildELF(0x1000000,
		testSegment{paddr: 0x1000000, data: text},
		testSegment{paddr: 0x1200000, data: data, memsz: 0x1000},
		testSegment{typ: 4, paddr: 0, data: []byte("note")}, // PT_NOTE: ignored
	)
	mem := newMem(t)
	// Dirty the bss so that zeroing is observable.
	if err := mem.WriteAt(bytes.Repeat([]byte{0xaa}, 0x1000), 0x1200000); err != nil {
		t.Fatal(err)
	}
	res, err := Load(mem, bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Result{Kind: KindELF, Entry: 0x1000000, Start: 0x1000000, End: 0x1201000}
	if res.Kind != want.Kind || res.Entry != want.Entry || res.Start != want.Start || res.End != want.End || res.SetupHeader != nil {
		t.Fatalf("result %+v, want %+v", res, want)
	}
	got := make([]byte, len(text))
	mem.ReadAt(got, 0x1000000)
	if !bytes.Equal(got, text) {
		t.Errorf("text segment not loaded")
	}
	got = make([]byte, 0x1000)
	mem.ReadAt(got, 0x1200000)
	if !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, 0x1000-len(data))) {
		t.Errorf("data segment or bss wrong: %q", got[:32])
	}
}

func TestLoadELFErrors(t *testing.T) {
	good := func() []byte {
		return buildELF(0x1000000, testSegment{paddr: 0x1000000, data: make([]byte, 64)})
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(good()) }
	put64 := func(b []byte, off int, v uint64) []byte {
		for i := 0; i < 8; i++ {
			b[off+i] = byte(v >> (8 * i))
		}
		return b
	}
	ph := elfHeaderSize // first program header
	tests := []struct {
		name string
		img  []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"truncated header", good()[:40], ErrInvalidELF},
		{"32-bit", mutate(func(b []byte) []byte { b[elfIdentClass] = 1; return b }), ErrUnsupported},
		{"big endian", mutate(func(b []byte) []byte { b[elfIdentData] = 2; return b }), ErrUnsupported},
		{"not x86-64", mutate(func(b []byte) []byte { b[18] = 3; return b }), ErrUnsupported},
		{"ET_DYN", mutate(func(b []byte) []byte { b[16] = 3; return b }), ErrUnsupported},
		{"bad phentsize", mutate(func(b []byte) []byte { b[54] = 32; return b }), ErrInvalidELF},
		{"no phdrs", mutate(func(b []byte) []byte { b[56] = 0; return b }), ErrInvalidELF},
		{"too many phdrs", mutate(func(b []byte) []byte { b[56], b[57] = 0xff, 0xff; return b }), ErrInvalidELF},
		{"phdrs past EOF", mutate(func(b []byte) []byte { b[56] = 100; return b }), ErrInvalidELF},
		{"phoff huge", mutate(func(b []byte) []byte { return put64(b, 32, 1<<63) }), ErrInvalidELF},
		{"truncated data", good()[:len(good())-1], ErrInvalidELF},
		{"offset wraps", mutate(func(b []byte) []byte { return put64(b, ph+8, ^uint64(0)-10) }), ErrInvalidELF},
		{"filesz > memsz", mutate(func(b []byte) []byte { return put64(b, ph+40, 8) }), ErrInvalidELF},
		{"paddr wraps", mutate(func(b []byte) []byte { put64(b, ph+24, ^uint64(0)-8); return put64(b, 24, ^uint64(0)-8) }), ErrInvalidELF},
		{"below 1 MiB", mutate(func(b []byte) []byte { put64(b, ph+24, 0x7000); return put64(b, 24, 0x7000) }), ErrInvalidELF},
		{"past guest memory", mutate(func(b []byte) []byte { put64(b, ph+24, testMemSize-32); return put64(b, 24, testMemSize-32) }), ErrNoFit},
		{"bss past guest memory", mutate(func(b []byte) []byte { return put64(b, ph+40, testMemSize) }), ErrNoFit},
		{"entry outside", mutate(func(b []byte) []byte { return put64(b, 24, 0x2000000) }), ErrInvalidELF},
		{"no PT_LOAD", mutate(func(b []byte) []byte { b[ph] = 4; return b }), ErrInvalidELF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(newMem(t), bytes.NewReader(tt.img), int64(len(tt.img)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLoadBzImage(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*bzParams)
		wantEnd uint64
	}{
		{"fixed at pref_address", func(p *bzParams) {}, 0x1000000 + 0x400000},
		{"relocatable aligned above pref", func(p *bzParams) { p.relocatable, p.pref = 1, 0x100000 }, 0x200000 + 0x400000},
		{"setup_sects 0 means 4", func(p *bzParams) { p.setupSects = 0 }, 0x1400000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := defaultBz()
			tt.mod(&p)
			img := buildBzImage(p)
			mem := newMem(t)
			res, err := Load(mem, bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if res.Kind != KindBzImage || res.Entry != 0x100200 || res.Start != 0x100000 || res.End != tt.wantEnd {
				t.Fatalf("result %+v, want entry 0x100200, end %#x", res, tt.wantEnd)
			}
			if len(res.SetupHeader) != 0x26c-SetupHeaderOffset || res.SetupHeader[0] != p.setupSects {
				t.Fatalf("setup header of %d bytes starting %#x", len(res.SetupHeader), res.SetupHeader[0])
			}
			got := make([]byte, len(p.kernel))
			mem.ReadAt(got, 0x100000)
			if !bytes.Equal(got, p.kernel) {
				t.Fatalf("kernel at 1 MiB = %q", got)
			}
		})
	}
}

func TestLoadBzImageErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*bzParams)
		cut  func([]byte) []byte
		want error
	}{
		{"protocol 2.11", func(p *bzParams) { p.version = 0x020b }, nil, ErrUnsupported},
		{"not loaded high", func(p *bzParams) { p.loadflags = 0 }, nil, ErrUnsupported},
		{"no 64-bit entry", func(p *bzParams) { p.xloadflags = 0 }, nil, ErrUnsupported},
		{"short header", func(p *bzParams) { p.hdrLen = 0x20 }, nil, ErrInvalidBzImage},
		{"no kernel", func(p *bzParams) { p.kernel = nil }, nil, ErrInvalidBzImage},
		{"truncated kernel", func(p *bzParams) { p.kernel = make([]byte, 4096) }, func(b []byte) []byte { return b[:len(b)-100] }, ErrInvalidBzImage},
		{"zero init_size", func(p *bzParams) { p.initSize = 0 }, nil, ErrInvalidBzImage},
		{"bad alignment", func(p *bzParams) { p.relocatable, p.align = 1, 0x300000 }, nil, ErrInvalidBzImage},
		{"init_size past memory", func(p *bzParams) { p.initSize = testMemSize }, nil, ErrNoFit},
		{"pref past memory", func(p *bzParams) { p.pref = 1 << 40 }, nil, ErrNoFit},
		{"pref wraps", func(p *bzParams) { p.pref = ^uint64(0) - 16 }, nil, ErrInvalidBzImage},
		{"pref below 1 MiB", func(p *bzParams) { p.pref = 0x1000 }, nil, ErrInvalidBzImage},
		{"bad boot flag", nil, func(b []byte) []byte { b[hdrBootFlagOff] = 0; return b }, ErrInvalidBzImage},
		{"truncated setup", nil, func(b []byte) []byte { return b[:0x250] }, ErrInvalidBzImage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := defaultBz()
			if tt.mod != nil {
				tt.mod(&p)
			}
			img := buildBzImage(p)
			if tt.cut != nil {
				img = tt.cut(img)
			}
			_, err := LoadBzImage(newMem(t), bytes.NewReader(img), int64(len(img)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestRealKernel loads the guest kernel that images/kernel/build.sh built,
// when it is in the cache.
func TestRealKernel(t *testing.T) {
	dir := os.Getenv("EMBER_KERNEL_DIR")
	if dir == "" {
		out, err := exec.Command("../../images/kernel/build.sh", "--hash").Output()
		if err != nil {
			t.Skipf("images/kernel/build.sh --hash: %v", err)
		}
		dir = strings.TrimSpace(string(out))
	}
	for _, name := range []string{"vmlinux", "bzImage"} {
		t.Run(name, func(t *testing.T) {
			img, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Skipf("guest kernel not built yet (run images/kernel/build.sh): %v", err)
			}
			mem := newMem(t)
			res, err := Load(mem, bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatalf("Load %s: %v", name, err)
			}
			t.Logf("%s: entry %#x, [%#x,%#x), setup header %d bytes", res.Kind, res.Entry, res.Start, res.End, len(res.SetupHeader))
			if res.Entry < res.Start || res.Entry >= res.End || res.End > testMemSize {
				t.Fatalf("implausible result %+v", res)
			}
			if name == "vmlinux" && res.Entry != 0x1000000 {
				t.Errorf("vmlinux entry %#x, want 0x1000000 (startup_64)", res.Entry)
			}
		})
	}
}
