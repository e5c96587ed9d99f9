package bootmarker

import (
	"reflect"
	"testing"
	"time"
)

func TestMarks(t *testing.T) {
	start := time.Unix(1000, 0)
	var got []Mark
	d := New(start, func(m Mark) { got = append(got, m) })
	now := start
	d.now = func() time.Time { return now }

	steps := []struct {
		after time.Duration
		off   uint64
		data  []byte
		want  *Mark
	}{
		{150 * time.Millisecond, 0, []byte{MarkInit}, &Mark{MarkInit, 150 * time.Millisecond}},
		{10 * time.Millisecond, 0, []byte{1, 2}, nil}, // wide write ignored
		{10 * time.Millisecond, 1, []byte{7}, nil},    // other offset ignored
		{30 * time.Millisecond, 0, []byte{MarkReady}, &Mark{MarkReady, 200 * time.Millisecond}},
	}
	var want []Mark
	for _, s := range steps {
		now = now.Add(s.after)
		if err := d.Write(s.off, s.data); err != nil {
			t.Fatal(err)
		}
		if s.want != nil {
			want = append(want, *s.want)
		}
	}
	if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(d.Marks(), want) {
		t.Fatalf("marks %v / %v, want %v", got, d.Marks(), want)
	}
	b := []byte{0xff}
	d.Read(0, b)
	if b[0] != 0 {
		t.Fatalf("read %#x", b[0])
	}
	for i := 0; i < MaxMarks+5; i++ {
		d.Write(0, []byte{9})
	}
	if len(d.Marks()) != MaxMarks {
		t.Fatalf("%d marks kept", len(d.Marks()))
	}
	d.Reset(now)
	if len(d.Marks()) != 0 {
		t.Fatalf("Reset kept marks")
	}
}
