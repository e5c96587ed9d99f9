package snapshot

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

func sampleState() *State {
	cpu := vmm.CPUState{
		ID:    0,
		CPUID: []kvm.CPUIDEntry{{Function: 0, EBX: 0x756e6547, EDX: 0x49656e69, ECX: 0x6c65746e}, {Function: 1, EAX: 0x906ea}},
		Regs:  kvm.Regs{RAX: 1, RCX: 2, RIP: 0x100000, RFLAGS: 0x3002},
		XSave: &kvm.XSave{}, LAPIC: &kvm.LAPICState{},
		MSRs:   []kvm.MSREntry{{Index: 0x10, Data: 12345}, {Index: 0x6e0, Data: 99}},
		TSCKHz: 2000000,
	}
	cpu.XSave.Region[3] = 7
	cpu.LAPIC.Regs[0x20] = 1
	cpu.Sregs.CR3 = 0x1000
	cpu.Events.Exception.Nr = 14
	cpu.Events.ExceptionPayload = 0xdead
	pit := &kvm.PITState2{Flags: 1}
	pit.Channels[0].Count = 65536
	chip := kvm.IRQChip{ChipID: 2}
	chip.Chip[5] = 9
	return &State{
		ID: NewID(), Kind: KindFull, Created: time.Unix(0, 1700000000123456789),
		MemoryFile: "memory-x.raw",
		CPU:        cpuInfoFrom(cpu.CPUID),
		Regions:    []RegionLayout{{GPA: 0, Size: 1 << 20, FileOffset: 0}, {GPA: 4 << 20, Size: 2 << 20, FileOffset: 1 << 20}},
		Machine: &vmm.MachineState{
			VM:   vmm.VMState{Clock: kvm.ClockData{Clock: 42}, PIT: pit, IRQChips: []kvm.IRQChip{chip}},
			CPUs: []vmm.CPUState{cpu},
		},
		Devices: []DeviceState{{Name: "serial", Version: 3, Data: []byte{1, 2, 3}}, {Name: "empty", Version: 1, Data: []byte{}}},
	}
}

func TestStateRoundTrip(t *testing.T) {
	for _, kind := range []Kind{KindFull, KindDiff} {
		s := sampleState()
		if kind == KindDiff {
			s.Kind, s.Parent = KindDiff, NewID()
			s.Dirty = []Extent{{0, 4096}, {8192, 3 * 4096}, {1 << 20, 4096}}
		}
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalState(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("%v: round trip differs:\n got %+v\nwant %+v", kind, got, s)
		}
		if got.CPU.Vendor != "GenuineIntel" || got.CPU.Family() != 6 {
			t.Errorf("cpu info %+v family %d", got.CPU, got.CPU.Family())
		}
	}
}

// reframe rewrites a file's header fields and recomputes its checksum, so
// a test can reach the checks behind the checksum.
func reframe(b []byte, edit func(b []byte)) []byte {
	b = append([]byte(nil), b...)
	edit(b)
	end := len(b) - 4
	binary.LittleEndian.PutUint32(b[end:], crc32.Checksum(b[:end], castagnoli))
	return b
}

func TestStateRejectsDamage(t *testing.T) {
	good, err := sampleState().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { b := append([]byte(nil), good...); b[i] ^= 0x40; return b }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"magic prefix only", good[:5], ErrTruncated},
		{"wrong magic", append([]byte("NOTEMBER"), good[8:]...), ErrBadMagic},
		{"newer major", reframe(good, func(b []byte) { binary.LittleEndian.PutUint16(b[8:], FormatMajor+1) }), ErrVersion},
		{"major zero", reframe(good, func(b []byte) { binary.LittleEndian.PutUint16(b[8:], 0) }), ErrVersion},
		{"header only", good[:headerSize], ErrTruncated},
		{"cut in body", good[:len(good)/2], ErrTruncated},
		{"cut checksum", good[:len(good)-2], ErrTruncated},
		{"trailing bytes", reframe(append(append([]byte(nil), good[:len(good)-4]...), 0, 0, 0, 0, 0, 0, 0, 0), func([]byte) {}), ErrCorrupt},
		{"flipped body byte", flip(headerSize + 40), ErrChecksum},
		{"flipped checksum", flip(len(good) - 1), ErrChecksum},
		{"section length past end", reframe(good, func(b []byte) { binary.LittleEndian.PutUint64(b[headerSize+8:], 1<<40) }), ErrCorrupt},
		{"unknown section version", reframe(good, func(b []byte) { binary.LittleEndian.PutUint16(b[headerSize+4:], 9) }), ErrVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnmarshalState(tt.b)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestStateRejectsBadContent encodes states whose content is invalid (with
// a valid checksum) and expects ErrCorrupt.
func TestStateRejectsBadContent(t *testing.T) {
	tests := []struct {
		name string
		edit func(s *State)
	}{
		{"no id", func(s *State) { s.ID = ID{} }},
		{"bad kind", func(s *State) { s.Kind = 7 }},
		{"diff without parent", func(s *State) { s.Kind = KindDiff }},
		{"path in memory file name", func(s *State) { s.MemoryFile = "../../etc/passwd" }},
		{"unaligned region", func(s *State) { s.Regions[0].Size = 1000 }},
		{"overlapping regions", func(s *State) { s.Regions[1].GPA = 4096 }},
		{"gap in file", func(s *State) { s.Regions[1].FileOffset = 8 << 20 }},
		{"wrapping region", func(s *State) { s.Regions[1].GPA = ^uint64(0) &^ 4095 }},
		{"dirty extent past end", func(s *State) { s.Kind, s.Parent, s.Dirty = KindDiff, NewID(), []Extent{{3 << 20, 4096}} }},
		{"unsorted dirty extents", func(s *State) { s.Kind, s.Parent, s.Dirty = KindDiff, NewID(), []Extent{{8192, 4096}, {0, 4096}} }},
		{"no xsave", func(s *State) { s.Machine.CPUs[0].XSave = nil }},
	}
	writerOnly := map[string]bool{"no xsave": true} // cannot be encoded at all
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sampleState()
			tt.edit(s)
			if _, err := s.MarshalBinary(); !errors.Is(err, ErrCorrupt) {
				t.Errorf("MarshalBinary: %v, want ErrCorrupt", err)
			}
			if writerOnly[tt.name] {
				return
			}
			// Bypass the writer's validation: the reader must catch it too.
			b := encodeUnchecked(s)
			if _, err := UnmarshalState(b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("UnmarshalState: %v, want ErrCorrupt", err)
			}
		})
	}
}

// encodeUnchecked is MarshalBinary without validation.
func encodeUnchecked(s *State) []byte {
	old := validateHook
	validateHook = func(*State) error { return nil }
	defer func() { validateHook = old }()
	b, err := s.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

func TestKVMStructSizes(t *testing.T) {
	// The fixed encodings are the kernel ABI structures; a size change in
	// vmm/kvm would change the format and must bump its version.
	for _, tt := range []struct {
		v    any
		want int
	}{
		{&kvm.Regs{}, 144}, {&kvm.Sregs{}, 312}, {&kvm.XSave{}, 4096}, {&kvm.XCRs{}, 392},
		{&kvm.DebugRegs{}, 128}, {&kvm.LAPICState{}, 1024}, {&kvm.VCPUEvents{}, 64},
		{&kvm.ClockData{}, 48}, {&kvm.PITState2{}, 112}, {&kvm.IRQChip{}, 520},
	} {
		if got := binary.Size(tt.v); got != tt.want {
			t.Errorf("%T encodes in %d bytes, want %d", tt.v, got, tt.want)
		}
	}
}

func TestUFFDStructSizes(t *testing.T) {
	for _, tt := range []struct {
		name      string
		size, req uintptr
	}{
		{"api", unsafe.Sizeof(uffdioAPIArg{}), uffdioAPI},
		{"register", unsafe.Sizeof(uffdioRegisterArg{}), uffdioRegister},
		{"unregister", unsafe.Sizeof(uffdioRange{}), uffdioUnregister},
		{"wake", unsafe.Sizeof(uffdioRange{}), uffdioWake},
		{"copy", unsafe.Sizeof(uffdioCopyArg{}), uffdioCopy},
		{"zeropage", unsafe.Sizeof(uffdioZeropageArg{}), uffdioZeropage},
	} {
		if got := tt.req >> 16 & 0x3fff; got != tt.size {
			t.Errorf("%s: ioctl encodes size %d, struct is %d", tt.name, got, tt.size)
		}
	}
}

func TestWorkingSetFile(t *testing.T) {
	id := NewID()
	w := workingSetFromOrder(id, []uint64{10, 11, 12, 3, 4, 100})
	if want := []PageRun{{10, 3}, {3, 2}, {100, 1}}; !reflect.DeepEqual(w.Runs, want) {
		t.Fatalf("runs %v, want %v", w.Runs, want)
	}
	b, err := w.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalWorkingSet(b, id, 200)
	if err != nil || !reflect.DeepEqual(got, w) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	tests := []struct {
		name  string
		b     []byte
		id    ID
		pages uint64
		want  error
	}{
		{"other snapshot", b, NewID(), 200, ErrMismatch},
		{"run outside memory", b, id, 100, ErrCorrupt},
		{"truncated", b[:len(b)-10], id, 200, ErrTruncated},
		{"flipped", append(append([]byte(nil), b[:40]...), append([]byte{b[40] ^ 1}, b[41:]...)...), id, 200, ErrChecksum},
		{"state magic", append(stateMagic[:], b[8:]...), id, 200, ErrBadMagic},
	}
	for _, tt := range tests {
		if _, err := UnmarshalWorkingSet(tt.b, tt.id, tt.pages); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	dup := workingSetFromOrder(id, []uint64{5, 6, 5})
	b, _ = dup.MarshalBinary()
	if _, err := UnmarshalWorkingSet(b, id, 200); !errors.Is(err, ErrCorrupt) {
		t.Errorf("duplicate page: %v", err)
	}
}

func TestInstallPlan(t *testing.T) {
	// Touch order 7, 3, 4, 5 | 1, 2 with batches of 4: the first batch is
	// sorted into 3-5 and 7, the second into 1-2.
	w := workingSetFromOrder(ID{1}, []uint64{7, 3, 4, 5, 1, 2})
	got := installPlan(w, 4)
	want := []Extent{{3 * 4096, 3 * 4096}, {7 * 4096, 4096}, {4096, 2 * 4096}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plan %v, want %v", got, want)
	}
}

func TestDirtyExtents(t *testing.T) {
	layout := []RegionLayout{{GPA: 0, Size: 8 * 4096, FileOffset: 0}, {GPA: 1 << 20, Size: 4 * 4096, FileOffset: 8 * 4096}}
	a, b := memory.NewBitmap(8), memory.NewBitmap(4)
	for _, p := range []uint64{0, 1, 2, 7} {
		a.Set(p)
	}
	b.Set(0)
	b.Set(3)
	got := dirtyExtents(layout, []memory.Bitmap{a, b})
	// Page 7 of region 0 and page 0 of region 1 are adjacent in the file.
	want := []Extent{{0, 3 * 4096}, {7 * 4096, 2 * 4096}, {11 * 4096, 4096}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("extents %v, want %v", got, want)
	}
}
