package vsock

import (
	"errors"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	tests := []Header{
		{},
		{SrcCID: 3, DstCID: 2, SrcPort: 1024, DstPort: 1 << 30, Len: 4096, Type: TypeStream, Op: OpRW, Flags: 3, BufAlloc: 1 << 18, FwdCnt: 77},
		{SrcCID: 1<<64 - 1, DstCID: 1<<64 - 1, SrcPort: 1<<32 - 1, DstPort: 1<<32 - 1, Len: 1<<32 - 1, Type: 0xffff, Op: 0xffff, Flags: 1<<32 - 1, BufAlloc: 1<<32 - 1, FwdCnt: 1<<32 - 1},
	}
	for _, h := range tests {
		b := h.Encode()
		if len(b) != HeaderSize {
			t.Fatalf("encoded %d bytes", len(b))
		}
		got, ok := DecodeHeader(b)
		if !ok || got != h {
			t.Errorf("round trip of %v gave %v", h, got)
		}
	}
	if _, ok := DecodeHeader(make([]byte, HeaderSize-1)); ok {
		t.Error("decoded a short header")
	}
	// Field offsets as in struct virtio_vsock_hdr.
	b := Header{Op: OpShutdown, FwdCnt: 0x01020304}.Encode()
	if b[30] != 4 || b[40] != 4 || b[43] != 1 {
		t.Errorf("layout: % x", b)
	}
}

func TestCredit(t *testing.T) {
	tests := []struct {
		name                   string
		bufAlloc, fwdCnt, sent uint32
		want                   uint32
	}{
		{"fresh", 4096, 0, 0, 4096},
		{"half used", 4096, 0, 2048, 2048},
		{"full", 4096, 0, 4096, 0},
		{"consumed", 4096, 4096, 4096, 4096},
		{"counters wrap", 4096, 1<<32 - 100, 50, 4096 - 150},
		{"receiver lies: fwd ahead of sent", 4096, 10, 5, 0},
		{"buffer shrank below in-flight", 1024, 0, 2048, 0},
	}
	for _, tt := range tests {
		if got := credit(tt.bufAlloc, tt.fwdCnt, tt.sent); got != tt.want {
			t.Errorf("%s: credit = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestReadConnect(t *testing.T) {
	tests := []struct {
		in   string
		port uint32
		ok   bool
	}{
		{"CONNECT 1024\n", 1024, true},
		{"CONNECT 0\n", 0, true},
		{"CONNECT 4294967295\r\n", 1<<32 - 1, true},
		{"CONNECT 4294967296\n", 0, false},
		{"CONNECT -1\n", 0, false},
		{"connect 5\n", 0, false},
		{"CONNECT\n", 0, false},
		{"CONNECT 5", 0, false}, // no newline
		{"CONNECT " + strings.Repeat("1", 80) + "\n", 0, false},
	}
	for _, tt := range tests {
		port, err := readConnect(strings.NewReader(tt.in))
		if (err == nil) != tt.ok || port != tt.port {
			t.Errorf("%q: %d, %v", tt.in, port, err)
		}
		if err != nil && !errors.Is(err, errBadHandshake) {
			t.Errorf("%q: error %v is not errBadHandshake", tt.in, err)
		}
	}
	// Bytes after the line stay unread.
	r := strings.NewReader("CONNECT 7\npayload")
	if _, err := readConnect(r); err != nil || r.Len() != len("payload") {
		t.Errorf("readConnect consumed %d bytes past the line", len("payload")-r.Len())
	}
}
