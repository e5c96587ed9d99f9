package labproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		typ     byte
		payload []byte
		frames  int
	}{
		{"empty", Exit, nil, 1},
		{"small", Stdout, []byte("hello\n"), 1},
		{"exactly max", Stderr, bytes.Repeat([]byte{1}, MaxPayload), 1},
		{"split", Stdout, bytes.Repeat([]byte{2}, 2*MaxPayload+3), 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := NewFrameWriter(&buf).WriteFrame(tc.typ, tc.payload); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for i := 0; i < tc.frames; i++ {
				typ, p, err := ReadFrame(&buf)
				if err != nil || typ != tc.typ {
					t.Fatalf("frame %d: type %q, err %v", i, typ, err)
				}
				got = append(got, p...)
			}
			if !bytes.Equal(got, tc.payload) {
				t.Fatalf("payload mismatch: %d bytes, want %d", len(got), len(tc.payload))
			}
			if _, _, err := ReadFrame(&buf); err != io.EOF {
				t.Fatalf("after last frame: %v, want io.EOF", err)
			}
		})
	}
}

func TestReadFrameErrors(t *testing.T) {
	huge := make([]byte, 5)
	huge[0] = Stdout
	binary.BigEndian.PutUint32(huge[1:], MaxPayload+1)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"truncated header", []byte{Stdout, 0, 0}, io.ErrUnexpectedEOF},
		{"truncated payload", []byte{Stdout, 0, 0, 0, 4, 'a'}, io.ErrUnexpectedEOF},
		{"too large", huge, ErrFrameTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ReadFrame(bytes.NewReader(tc.in)); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestStreamsDoNotInterleave writes from two streams concurrently and
// checks that every frame is intact.
func TestStreamsDoNotInterleave(t *testing.T) {
	var buf bytes.Buffer
	fw := NewFrameWriter(&buf)
	var wg sync.WaitGroup
	for _, typ := range []byte{Stdout, Stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := fw.Stream(typ)
			for range 200 {
				if _, err := w.Write(bytes.Repeat([]byte{typ}, 100)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := 0
	for {
		typ, p, err := ReadFrame(&buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, bytes.Repeat([]byte{typ}, 100)) {
			t.Fatalf("frame %d of type %q holds foreign bytes", n, typ)
		}
		n++
	}
	if n != 400 {
		t.Fatalf("%d frames, want 400", n)
	}
}
