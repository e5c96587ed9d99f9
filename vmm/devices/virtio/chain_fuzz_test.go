package virtio

import (
	"testing"

	"github.com/embervm/ember/vmm/memory"
)

// FuzzParseChain feeds arbitrary descriptor tables (also copied into guest
// memory, so indirect descriptors can point into them) to the chain
// parser. It must never panic or loop, and whatever it accepts must obey
// the rules it promises. The seed corpus is in testdata/fuzz/FuzzParseChain;
// plain `go test` runs it.
func FuzzParseChain(f *testing.F) {
	const memSize = 64 << 10
	mem, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: memSize})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { mem.Close() })
	f.Fuzz(func(t *testing.T, data []byte, head uint16, sizeLog uint8, indirect bool) {
		size := uint16(1) << (sizeLog % 16)
		tab := make([]byte, descTableSize(size))
		copy(tab, data)
		clear(mustSlice(t, mem, 0, memSize))
		if err := mem.WriteAt(data[:min(len(data), memSize)], 0); err != nil {
			t.Fatal(err)
		}
		descs, err := parseChain(mem, tab, size, head, indirect)
		if err != nil {
			return
		}
		if len(descs) == 0 || len(descs) > int(size) {
			t.Fatalf("accepted a chain of %d descriptors, queue size %d", len(descs), size)
		}
		writable := false
		for i, d := range descs {
			if d.Len == 0 || d.Addr+uint64(d.Len) < d.Addr || !mem.Contains(d.Addr, uint64(d.Len)) {
				t.Fatalf("descriptor %d %+v accepted outside memory", i, d)
			}
			if d.Flags&DescFlagIndirect != 0 {
				t.Fatalf("descriptor %d %+v: indirect descriptor returned as a buffer", i, d)
			}
			if !d.Writable() && writable {
				t.Fatalf("descriptor %d: readable after writable", i)
			}
			writable = writable || d.Writable()
		}
	})
}

func mustSlice(t *testing.T, mem *memory.Guest, gpa, n uint64) []byte {
	s, err := mem.Slice(gpa, n)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
