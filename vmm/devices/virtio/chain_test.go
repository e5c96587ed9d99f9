package virtio_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/virtiotest"
	"github.com/embervm/ember/vmm/memory"
)

const memSize = 4 << 20

func newMem(t testing.TB) *memory.Guest {
	t.Helper()
	g, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: memSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

type desc = virtio.Descriptor

const (
	next     = virtio.DescFlagNext
	write    = virtio.DescFlagWrite
	indirect = virtio.DescFlagIndirect
)

func table(descs ...desc) []byte {
	var b []byte
	for _, d := range descs {
		b = append(b, virtiotest.EncodeDesc(d)...)
	}
	return b
}

func TestParseChain(t *testing.T) {
	mem := newMem(t)
	// An indirect table at 0x10000: readable then writable.
	if err := mem.WriteAt(table(
		desc{Addr: 0x2000, Len: 16, Flags: next, Next: 1},
		desc{Addr: 0x3000, Len: 1, Flags: write},
	), 0x10000); err != nil {
		t.Fatal(err)
	}
	// A nested indirect table at 0x11000, a looping one at 0x12000.
	mem.WriteAt(table(desc{Addr: 0x10000, Len: 32, Flags: indirect}), 0x11000)
	mem.WriteAt(table(
		desc{Addr: 0x2000, Len: 16, Flags: next, Next: 1},
		desc{Addr: 0x2000, Len: 16, Flags: next, Next: 0},
	), 0x12000)

	tests := []struct {
		name     string
		descs    []desc
		size     uint16
		head     uint16
		indirect bool
		want     error
		wantN    int
	}{
		{"single readable", []desc{{Addr: 0x1000, Len: 64}}, 4, 0, false, nil, 1},
		{"readable then writable", []desc{{Addr: 0x1000, Len: 16, Flags: next, Next: 2}, {}, {Addr: 0x2000, Len: 1, Flags: write}}, 4, 0, false, nil, 2},
		{"head at size", []desc{{Addr: 0x1000, Len: 1}}, 4, 4, false, virtio.ErrDescIndex, 0},
		{"head beyond size", []desc{{Addr: 0x1000, Len: 1}}, 4, 0xffff, false, virtio.ErrDescIndex, 0},
		{"next beyond size", []desc{{Addr: 0x1000, Len: 1, Flags: next, Next: 4}}, 4, 0, false, virtio.ErrDescIndex, 0},
		{"address outside memory", []desc{{Addr: memSize, Len: 1}}, 4, 0, false, virtio.ErrBufferOutOfMemory, 0},
		{"buffer runs past memory", []desc{{Addr: memSize - 8, Len: 16}}, 4, 0, false, virtio.ErrBufferOutOfMemory, 0},
		{"length wraps", []desc{{Addr: ^uint64(0) - 8, Len: 64}}, 4, 0, false, virtio.ErrBufferWraps, 0},
		{"zero length", []desc{{Addr: 0x1000, Len: 0}}, 4, 0, false, virtio.ErrZeroLength, 0},
		{"self loop", []desc{{Addr: 0x1000, Len: 1, Flags: next, Next: 0}}, 4, 0, false, virtio.ErrChainTooLong, 0},
		{"two-step loop", []desc{{Addr: 0x1000, Len: 1, Flags: next, Next: 1}, {Addr: 0x1000, Len: 1, Flags: next, Next: 0}}, 2, 0, false, virtio.ErrChainTooLong, 0},
		{"readable after writable", []desc{{Addr: 0x1000, Len: 1, Flags: write | next, Next: 1}, {Addr: 0x2000, Len: 1}}, 2, 0, false, virtio.ErrReadAfterWrite, 0},
		{"indirect", []desc{{Addr: 0x10000, Len: 32, Flags: indirect}}, 4, 0, true, nil, 2},
		{"indirect write flag ignored", []desc{{Addr: 0x10000, Len: 32, Flags: indirect | write}}, 4, 0, true, nil, 2},
		{"indirect not negotiated", []desc{{Addr: 0x10000, Len: 32, Flags: indirect}}, 4, 0, false, virtio.ErrIndirect, 0},
		{"indirect nested", []desc{{Addr: 0x11000, Len: 16, Flags: indirect}}, 4, 0, true, virtio.ErrIndirect, 0},
		{"indirect with next", []desc{{Addr: 0x10000, Len: 32, Flags: indirect | next, Next: 1}, {Addr: 0x1000, Len: 1}}, 4, 0, true, virtio.ErrIndirect, 0},
		{"indirect after buffer", []desc{{Addr: 0x1000, Len: 1, Flags: next, Next: 1}, {Addr: 0x10000, Len: 32, Flags: indirect}}, 4, 0, true, virtio.ErrIndirect, 0},
		{"indirect length not multiple of 16", []desc{{Addr: 0x10000, Len: 24, Flags: indirect}}, 4, 0, true, virtio.ErrIndirect, 0},
		{"indirect zero length", []desc{{Addr: 0x10000, Len: 0, Flags: indirect}}, 4, 0, true, virtio.ErrIndirect, 0},
		{"indirect table larger than queue", []desc{{Addr: 0x10000, Len: 16 * 8, Flags: indirect}}, 4, 0, true, virtio.ErrChainTooLong, 0},
		{"indirect table outside memory", []desc{{Addr: memSize - 16, Len: 32, Flags: indirect}}, 4, 0, true, virtio.ErrBufferOutOfMemory, 0},
		{"indirect table wraps", []desc{{Addr: ^uint64(0) - 15, Len: 32, Flags: indirect}}, 4, 0, true, virtio.ErrBufferWraps, 0},
		{"indirect loop", []desc{{Addr: 0x12000, Len: 32, Flags: indirect}}, 4, 0, true, virtio.ErrChainTooLong, 0},
		{"indirect next beyond table", []desc{{Addr: 0x10000, Len: 16, Flags: indirect}}, 4, 0, true, virtio.ErrDescIndex, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := make([]byte, 16*int(tt.size))
			copy(tab, table(tt.descs...))
			got, err := virtio.ParseChain(mem, tab, tt.size, tt.head, tt.indirect)
			if tt.want == nil {
				if err != nil || len(got) != tt.wantN {
					t.Fatalf("ParseChain = %d descriptors, %v; want %d", len(got), err, tt.wantN)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParseChain error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestChainReaderWriter(t *testing.T) {
	mem := newMem(t)
	vq := virtiotest.NewQueue(t, mem, 0x100000, 8)
	c := vq.Add(virtiotest.Out([]byte("hello, ")), virtiotest.Out([]byte("world")), virtiotest.In(3), virtiotest.In(5))
	q, err := virtio.NewQueue(mem, vq.State(8))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := q.Pop()
	if err != nil || chain == nil {
		t.Fatalf("Pop = %v, %v", chain, err)
	}
	if len(chain.Readable()) != 2 || len(chain.Writable()) != 2 {
		t.Fatalf("readable %d writable %d", len(chain.Readable()), len(chain.Writable()))
	}
	r := chain.Reader()
	if r.Len() != 12 {
		t.Errorf("reader Len = %d", r.Len())
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "hello, world" {
		t.Fatalf("read %q, %v", got, err)
	}
	w := chain.Writer()
	if n, err := w.Write([]byte("abcdef")); n != 6 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if n, err := w.Write([]byte("xyz")); n != 2 || !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("overflowing Write = %d, %v; want 2, ErrShortWrite", n, err)
	}
	if w.Written() != 8 || w.Len() != 0 {
		t.Errorf("Written %d Len %d", w.Written(), w.Len())
	}
	if b := append(vq.Read(c.Addrs[2], 3), vq.Read(c.Addrs[3], 5)...); !bytes.Equal(b, []byte("abcdefxy")) {
		t.Errorf("guest buffers hold %q", b)
	}
}
