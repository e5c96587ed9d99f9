package memory

import (
	"bytes"
	"errors"
	"testing"
)

func newTestGuest(t *testing.T) *Guest {
	t.Helper()
	// Two adjacent regions and one after a hole: [0,64K) [64K,128K) [1M,1M+64K).
	g, err := NewAnonymous(Range{0, 64 << 10}, Range{64 << 10, 64 << 10}, Range{1 << 20, 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestReadWriteBounds(t *testing.T) {
	g := newTestGuest(t)
	tests := []struct {
		name string
		gpa  uint64
		n    int
		ok   bool
	}{
		{"start", 0, 8, true},
		{"spans adjacent regions", 64<<10 - 4, 8, true},
		{"end of last region", 1<<20 + 64<<10 - 8, 8, true},
		{"into hole", 128<<10 - 4, 8, false},
		{"in hole", 512 << 10, 1, false},
		{"past end", 1<<20 + 64<<10, 1, false},
		{"wraps", ^uint64(0) - 2, 8, false},
		{"huge length", 0, 1 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := bytes.Repeat([]byte{0xab}, tt.n)
			err := g.WriteAt(buf, tt.gpa)
			if tt.ok != (err == nil) {
				t.Fatalf("WriteAt(%#x, %d) = %v, want ok=%v", tt.gpa, tt.n, err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrOutOfRange) {
					t.Errorf("error %v is not ErrOutOfRange", err)
				}
				return
			}
			got := make([]byte, tt.n)
			if err := g.ReadAt(got, tt.gpa); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, buf) {
				t.Errorf("read back %x, want %x", got, buf)
			}
		})
	}
}

func TestFailedWriteTouchesNothing(t *testing.T) {
	g := newTestGuest(t)
	// Partly inside, partly in the hole: nothing may be written.
	if err := g.WriteAt(bytes.Repeat([]byte{1}, 16), 128<<10-8); err == nil {
		t.Fatal("write into hole succeeded")
	}
	v, err := g.ReadUint64(128<<10 - 8)
	if err != nil || v != 0 {
		t.Fatalf("partial write happened: %#x, %v", v, err)
	}
}

func TestSlice(t *testing.T) {
	g := newTestGuest(t)
	s, err := g.Slice(4096, 16)
	if err != nil || len(s) != 16 || cap(s) != 16 {
		t.Fatalf("Slice = len %d cap %d, %v", len(s), cap(s), err)
	}
	s[0] = 7
	if v, _ := g.ReadUint64(4096); v != 7 {
		t.Errorf("write through slice not seen: %d", v)
	}
	if _, err := g.Slice(64<<10-4, 8); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("slice across regions: %v, want ErrOutOfRange", err)
	}
}

func TestOverlapAndAlignment(t *testing.T) {
	if _, err := NewAnonymous(Range{0, 8192}, Range{4096, 4096}); !errors.Is(err, ErrOverlap) {
		t.Errorf("overlap: %v", err)
	}
	if _, err := NewAnonymous(Range{100, 4096}); !errors.Is(err, ErrAlignment) {
		t.Errorf("alignment: %v", err)
	}
}

func TestBitmap(t *testing.T) {
	b := NewBitmap(130)
	for _, p := range []uint64{0, 63, 64, 129} {
		b.Set(p)
	}
	var got []uint64
	b.Pages(func(p uint64) { got = append(got, p) })
	if len(got) != 4 || got[0] != 0 || got[1] != 63 || got[2] != 64 || got[3] != 129 || b.Count() != 4 {
		t.Errorf("pages %v count %d", got, b.Count())
	}
	if !b.Test(63) || b.Test(62) {
		t.Error("Test wrong")
	}
}
