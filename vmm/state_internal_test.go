package vmm

import (
	"testing"

	"github.com/embervm/ember/vmm/kvm"
)

func TestRestoredSregsTR(t *testing.T) {
	leaf0 := func(ebx uint32) []kvm.CPUIDEntry {
		return []kvm.CPUIDEntry{{Function: 1, EBX: 0x68747541}, {Function: 0, EAX: 0x10, EBX: ebx, ECX: 0x444d4163, EDX: 0x69746e65}}
	}
	const amd, hygon, intel = 0x68747541, 0x6f677948, 0x756e6547 // "Auth", "Hygo", "Genu"
	for _, tt := range []struct {
		name     string
		cpuid    []kvm.CPUIDEntry
		tr, want uint8
	}{
		{"amd busy tss", leaf0(amd), tssBusy64, tssAvailable64},
		{"hygon busy tss", leaf0(hygon), tssBusy64, tssAvailable64},
		{"amd available tss", leaf0(amd), tssAvailable64, tssAvailable64},
		{"intel busy tss", leaf0(intel), tssBusy64, tssBusy64},
		{"no leaf 0", nil, tssBusy64, tssBusy64},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &CPUState{CPUID: tt.cpuid}
			s.Sregs.TR = kvm.Segment{Base: 0xfffffe0000003000, Limit: 0x4087, Selector: 0x40, Type: tt.tr, Present: 1}
			got := restoredSregs(s)
			if got.TR.Type != tt.want {
				t.Errorf("TR type %d restored as %d, want %d", tt.tr, got.TR.Type, tt.want)
			}
			if s.Sregs.TR.Type != tt.tr {
				t.Error("restoredSregs changed the saved state")
			}
			got.TR.Type = tt.tr
			if got != s.Sregs {
				t.Error("restoredSregs changed more than the TR type")
			}
		})
	}
}
