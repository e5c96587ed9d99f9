package x86

import (
	"errors"
	"reflect"
	"testing"

	"github.com/embervm/ember/vmm/memory"
)

func TestMemoryRanges(t *testing.T) {
	tests := []struct {
		size uint64
		want []memory.Range
		err  error
	}{
		{256 << 20, []memory.Range{{GPA: 0, Size: 256 << 20}}, nil},
		{3 << 30, []memory.Range{{GPA: 0, Size: 3 << 30}}, nil},
		{4 << 30, []memory.Range{{GPA: 0, Size: 3 << 30}, {GPA: 4 << 30, Size: 1 << 30}}, nil},
		{16 << 20, nil, ErrLayout},
		{(256 << 20) + 1, nil, ErrLayout},
	}
	for _, tt := range tests {
		got, err := MemoryRanges(tt.size)
		if !errors.Is(err, tt.err) || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("MemoryRanges(%#x) = %v, %v; want %v, %v", tt.size, got, err, tt.want, tt.err)
		}
	}
}

func TestVirtioMMIOSlot(t *testing.T) {
	addr, irq, err := VirtioMMIOSlot(0)
	if err != nil || addr != VirtioMMIOBase || irq != FirstDeviceIRQ {
		t.Fatalf("slot 0 = %#x, %d, %v", addr, irq, err)
	}
	addr, irq, err = VirtioMMIOSlot(LastDeviceIRQ - FirstDeviceIRQ)
	if err != nil || irq != LastDeviceIRQ || addr >= VirtioMMIOLimit {
		t.Fatalf("last slot = %#x, %d, %v", addr, irq, err)
	}
	if _, _, err := VirtioMMIOSlot(LastDeviceIRQ - FirstDeviceIRQ + 1); !errors.Is(err, ErrLayout) {
		t.Fatalf("slot past the last: %v", err)
	}
	if got := VirtioMMIOCmdline(0xd0000000, 5); got != "virtio_mmio.device=4K@0xd0000000:5" {
		t.Fatalf("cmdline %q", got)
	}
}

func TestE820(t *testing.T) {
	var tab E820Table
	for i := 0; i < E820MaxEntries; i++ {
		if err := tab.Add(uint64(i)<<20, 1<<20, E820RAM); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	if err := tab.Add(1<<40, 1<<20, E820RAM); !errors.Is(err, ErrE820Full) {
		t.Fatalf("entry %d: err = %v, want ErrE820Full", E820MaxEntries, err)
	}
	if tab.Len() != E820MaxEntries {
		t.Fatalf("len %d", tab.Len())
	}
	for _, r := range []struct{ addr, size uint64 }{{0, 0}, {^uint64(0) - 5, 10}} {
		var t2 E820Table
		if err := t2.Add(r.addr, r.size, E820RAM); !errors.Is(err, ErrE820Range) {
			t.Errorf("Add(%#x, %#x) = %v, want ErrE820Range", r.addr, r.size, err)
		}
	}
}

func TestDefaultE820(t *testing.T) {
	tests := []struct {
		ram  uint64
		want []E820Entry
	}{
		{256 << 20, []E820Entry{{0, EBDAStart, E820RAM}, {HighMemStart, 256<<20 - HighMemStart, E820RAM}}},
		{5 << 30, []E820Entry{
			{0, EBDAStart, E820RAM},
			{HighMemStart, MMIOStart - HighMemStart, E820RAM},
			{MMIOEnd, 2 << 30, E820RAM},
		}},
	}
	for _, tt := range tests {
		tab, err := DefaultE820(tt.ram)
		if err != nil {
			t.Fatal(err)
		}
		if got := tab.Entries(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("DefaultE820(%#x) = %v, want %v", tt.ram, got, tt.want)
		}
	}
}
