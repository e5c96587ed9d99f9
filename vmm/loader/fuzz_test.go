package loader

import (
	"bytes"
	"testing"
)

// checkResult asserts the invariants of a successful load.
func checkResult(t *testing.T, res Result, err error) {
	if err != nil {
		return
	}
	if res.Start < HighMemStart || res.End > testMemSize || res.Start >= res.End {
		t.Fatalf("loaded outside guest memory: %+v", res)
	}
	if res.Entry < res.Start || res.Entry >= res.End {
		t.Fatalf("entry %#x outside [%#x,%#x)", res.Entry, res.Start, res.End)
	}
	if len(res.SetupHeader) > SetupHeaderLimit-SetupHeaderOffset {
		t.Fatalf("setup header of %d bytes", len(res.SetupHeader))
	}
}

func FuzzLoadELF(f *testing.F) {
	f.Add(buildELF(0x1000000, testSegment{paddr: 0x1000000, data: []byte("text")}))
	f.Add(buildELF(0x1000000,
		testSegment{paddr: 0x1000000, data: bytes.Repeat([]byte{1}, 100)},
		testSegment{paddr: 0x1100000, data: []byte("d"), memsz: 0x10000}))
	f.Add(buildELF(0x100, testSegment{paddr: 0x100, data: []byte("low")}))
	f.Add(buildELF(0x1000000, testSegment{paddr: 0x1000000, data: []byte("x"), offset: 1 << 40}))
	mem := newMem(f)
	f.Fuzz(func(t *testing.T, img []byte) {
		res, err := LoadELF(mem, bytes.NewReader(img), int64(len(img)))
		checkResult(t, res, err)
	})
}

func FuzzLoadBzImage(f *testing.F) {
	f.Add(buildBzImage(defaultBz()))
	p := defaultBz()
	p.relocatable, p.pref = 1, 0x100000
	f.Add(buildBzImage(p))
	p = defaultBz()
	p.setupSects = 0
	f.Add(buildBzImage(p))
	p = defaultBz()
	p.initSize = 0xffffffff
	f.Add(buildBzImage(p))
	mem := newMem(f)
	f.Fuzz(func(t *testing.T, img []byte) {
		res, err := Load(mem, bytes.NewReader(img), int64(len(img)))
		checkResult(t, res, err)
	})
}
