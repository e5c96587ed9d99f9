package agent

import (
	"encoding/binary"
	"net"
	"testing"
)

// TestFrameCounter: frames are counted when their last byte is written,
// however the writes split them.
func TestFrameCounter(t *testing.T) {
	frame := func(n int) []byte {
		b := make([]byte, frameHeaderLen+n)
		binary.BigEndian.PutUint32(b, uint32(n))
		b[8] = 2 // response
		return b
	}
	var stream []byte
	for _, n := range []int{5, 0, 70000, 1} {
		stream = append(stream, frame(n)...)
	}
	for _, chunk := range []int{1, 3, 10, 11, 4096, len(stream)} {
		var r replies
		a, b := net.Pipe()
		go func() {
			buf := make([]byte, 1<<16)
			for {
				if _, err := b.Read(buf); err != nil {
					return
				}
			}
		}()
		c := &frameCounter{Conn: a, r: &r}
		for off := 0; off < len(stream); off += chunk {
			end := min(off+chunk, len(stream))
			if _, err := c.Write(stream[off:end]); err != nil {
				t.Fatal(err)
			}
		}
		if got := r.written.Load(); got != 4 {
			t.Errorf("chunks of %d: %d frames counted, want 4", chunk, got)
		}
		// A partial frame is not counted.
		c.Write(frame(8)[:12])
		if got := r.written.Load(); got != 4 {
			t.Errorf("chunks of %d: partial frame counted (%d)", chunk, got)
		}
		a.Close()
		b.Close()
	}
}
