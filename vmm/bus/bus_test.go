package bus

import (
	"errors"
	"testing"
)

type recorder struct {
	lastOff uint64
	lastLen int
	val     byte
}

func (r *recorder) Read(off uint64, data []byte) error {
	r.lastOff, r.lastLen = off, len(data)
	for i := range data {
		data[i] = r.val
	}
	return nil
}

func (r *recorder) Write(off uint64, data []byte) error {
	r.lastOff, r.lastLen = off, len(data)
	r.val = data[0]
	return nil
}

func TestInsertOverlap(t *testing.T) {
	b := New("pio")
	if err := b.Insert(&recorder{}, 0x3f8, 8); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		base, size uint64
		want       error
	}{
		{0x3f0, 9, ErrOverlap},
		{0x3ff, 1, ErrOverlap},
		{0x3f4, 100, ErrOverlap},
		{0x400, 1, nil},
		{0x3f0, 8, nil},
		{0x10, 0, ErrEmptyRange},
		{^uint64(0), 2, ErrEmptyRange},
	}
	for _, tt := range tests {
		err := b.Insert(&recorder{}, tt.base, tt.size)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("Insert(%#x,%d) = %v, want %v", tt.base, tt.size, err, tt.want)
		}
	}
}

func TestDispatch(t *testing.T) {
	b := New("mmio")
	a, c := &recorder{}, &recorder{}
	if err := b.Insert(a, 0x1000, 0x100); err != nil {
		t.Fatal(err)
	}
	if err := b.Insert(c, 0x2000, 0x100); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(0x2010, []byte{9, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if c.lastOff != 0x10 || c.lastLen != 4 || c.val != 9 {
		t.Errorf("device c saw off %#x len %d val %d", c.lastOff, c.lastLen, c.val)
	}
	d := make([]byte, 2)
	if err := b.Read(0x20fe, d); err != nil || d[0] != 9 {
		t.Errorf("read at end of range: %v %v", d, err)
	}
	for _, addr := range []uint64{0x0fff, 0x1100, 0x20ff /* straddles end */, 0x3000} {
		err := b.Read(addr, make([]byte, 2))
		var ae *AccessError
		if !errors.Is(err, ErrNoDevice) || !errors.As(err, &ae) || ae.Addr != addr {
			t.Errorf("Read(%#x) = %v, want AccessError", addr, err)
		}
	}
	if err := b.Remove(0x1000); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(0x1000, []byte{1}); !errors.Is(err, ErrNoDevice) {
		t.Errorf("write after remove: %v", err)
	}
}
