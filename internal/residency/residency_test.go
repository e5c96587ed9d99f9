package residency

import (
	"os"
	"reflect"
	"testing"
)

func TestReadOnlyMappings(t *testing.T) {
	maps := `00400000-008ee000 r-xp 00000000 fd:01 1234 /usr/bin/ember vmm
008ee000-00e33000 r--p 004ee000 fd:01 1234 /usr/bin/ember vmm
00e33000-00e99000 rw-p 00a33000 fd:01 1234 /usr/bin/ember vmm
00e99000-02ede000 rw-p 00000000 00:00 0
7f0000000000-7f0000001000 r--p 00000000 fd:01 99 /usr/bin/other
7f0000002000-7f0000003000 r--s 00000000 fd:01 1234 /usr/bin/ember vmm
7f0000004000-7f0000005000 ---p 00000000 fd:01 1234 /usr/bin/ember vmm
zz-yy r--p 00000000 fd:01 1234 /usr/bin/ember vmm
7ffd3666c000-7ffd3668d000 rw-p 00000000 00:00 0 [stack]
`
	got := readOnlyMappings([]byte(maps), "/usr/bin/ember vmm")
	want := []mapping{{0x400000, 0x8ee000}, {0x8ee000, 0xe33000}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("readOnlyMappings = %#v, want %#v", got, want)
	}
}

// written lives in the binary's writable data: dropping the read-only
// pages must leave it be.
var written = []int{1, 2, 3}

// TestDropExecutablePages: the test binary's read-only pages leave its
// page tables, its code runs on, and its written data keeps its values.
func TestDropExecutablePages(t *testing.T) {
	written[1] = 42
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	ro := readOnlyMappings(maps, exe)
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	var buf []byte
	for _, m := range ro {
		buf = make([]byte, max(len(buf), int((m.end-m.start)/4096*8)))
	}
	// present counts the pages of ro mapped in this process (pagemap's
	// bit 63), touching little code itself.
	present := func() int {
		n := 0
		for _, m := range ro {
			b := buf[:(m.end-m.start)/4096*8]
			if _, err := pm.ReadAt(b, int64(m.start/4096*8)); err != nil {
				t.Fatal(err)
			}
			for i := 7; i < len(b); i += 8 {
				n += int(b[i] >> 7)
			}
		}
		return n
	}
	before := present()
	dropped, err := DropExecutablePages()
	after := present()
	if err != nil {
		t.Fatal(err)
	}
	if dropped == 0 || before == 0 {
		t.Fatalf("dropped %d bytes of mappings; %d pages were mapped", dropped, before)
	}
	// What runs after the drop maps some pages back at once; most stay out.
	if after > before/4 {
		t.Fatalf("the executable's read-only pages: %d mapped before, %d after dropping %d kB of mappings", before, after, dropped>>10)
	}
	if written[0] != 1 || written[1] != 42 || written[2] != 3 {
		t.Fatalf("written data changed: %v", written)
	}
	t.Logf("the executable's read-only pages: %d mapped before, %d after (%d kB of mappings)", before, after, dropped>>10)
}
