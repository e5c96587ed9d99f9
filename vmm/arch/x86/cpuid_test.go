package x86

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/embervm/ember/vmm/kvm"
)

// loadSupported returns KVM_GET_SUPPORTED_CPUID as recorded on a
// development host (Intel Xeon, kvm_pvm).
func loadSupported(t *testing.T) []kvm.CPUIDEntry {
	t.Helper()
	b, err := os.ReadFile("testdata/kvm-supported-cpuid-intel.json")
	if err != nil {
		t.Fatal(err)
	}
	var es []kvm.CPUIDEntry
	if err := json.Unmarshal(b, &es); err != nil {
		t.Fatal(err)
	}
	return es
}

// amdSupported turns the recorded list into an AMD-looking one.
func amdSupported(t *testing.T) []kvm.CPUIDEntry {
	es := loadSupported(t)
	for i := range es {
		if es[i].Function == 0 {
			es[i].EBX, es[i].EDX, es[i].ECX = 0x68747541, 0x69746e65, 0x444d4163 // AuthenticAMD
		}
	}
	return append(es, kvm.CPUIDEntry{Function: 0x8000001e, EAX: 7, EBX: 0x107, ECX: 0x301})
}

func leaf(t *testing.T, es []kvm.CPUIDEntry, fn, index uint32) kvm.CPUIDEntry {
	t.Helper()
	e := findLeaf(es, fn, index)
	if e == nil {
		t.Fatalf("leaf %#x.%d missing", fn, index)
	}
	return *e
}

func TestNormalizeCPUIDTopology(t *testing.T) {
	for _, vcpus := range []int{1, 2, 4} {
		for id := 0; id < vcpus; id++ {
			sup := loadSupported(t)
			orig := append([]kvm.CPUIDEntry(nil), sup...)
			es, err := NormalizeCPUID(sup, CPUIDConfig{VCPU: id, VCPUs: vcpus})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sup, orig) {
				t.Fatalf("supported list modified")
			}
			l1 := leaf(t, es, 1, 0)
			if got := l1.EBX >> 24; got != uint32(id) {
				t.Errorf("%d/%d: leaf 1 APIC id %d", id, vcpus, got)
			}
			if got := l1.EBX >> 16 & 0xff; got != uint32(vcpus) {
				t.Errorf("%d/%d: leaf 1 logical count %d", id, vcpus, got)
			}
			if l1.EBX&0xff00 != 0x800 {
				t.Errorf("%d/%d: CLFLUSH size lost: %#x", id, vcpus, l1.EBX)
			}
			if l1.ECX&leaf1ECXHypervisor == 0 {
				t.Errorf("hypervisor bit clear")
			}
			if got := l1.EDX&leaf1EDXHTT != 0; got != (vcpus > 1) {
				t.Errorf("%d/%d: HTT %v", id, vcpus, got)
			}
			for _, fn := range []uint32{0xb, 0x1f} {
				smt, core, end := leaf(t, es, fn, 0), leaf(t, es, fn, 1), leaf(t, es, fn, 2)
				for _, e := range []kvm.CPUIDEntry{smt, core, end} {
					if e.EDX != uint32(id) {
						t.Errorf("%d/%d: leaf %#x.%d x2APIC id %d", id, vcpus, fn, e.Index, e.EDX)
					}
				}
				if smt.EBX != 1 || smt.ECX>>8&0xff != 1 || core.EBX != uint32(vcpus) || core.ECX>>8&0xff != 2 || end.ECX>>8&0xff != 0 {
					t.Errorf("%d/%d: leaf %#x levels %+v %+v %+v", id, vcpus, fn, smt, core, end)
				}
				if 1<<core.EAX < vcpus {
					t.Errorf("%d/%d: core shift %d too small", id, vcpus, core.EAX)
				}
			}
			for _, e := range es {
				if e.Function == 4 && e.EAX&0x1f != 0 && e.EAX>>26 != uint32(vcpus-1) {
					t.Errorf("%d/%d: leaf 4.%d cores %d", id, vcpus, e.Index, e.EAX>>26+1)
				}
			}
			sig := leaf(t, es, 0x40000000, 0)
			if sig.EBX != kvmSignatureEBX || sig.ECX != kvmSignatureECX || sig.EDX != kvmSignatureEDX || sig.EAX < 0x40000001 {
				t.Errorf("KVM signature leaf %+v", sig)
			}
		}
	}
}

func TestNormalizeCPUIDAMD(t *testing.T) {
	es, err := NormalizeCPUID(amdSupported(t), CPUIDConfig{VCPU: 3, VCPUs: 4})
	if err != nil {
		t.Fatal(err)
	}
	if e := leaf(t, es, 0x8000001e, 0); e.EAX != 3 || e.EBX != 3 || e.ECX != 0 {
		t.Errorf("leaf 0x8000001e %+v", e)
	}
	if e := leaf(t, es, 0x80000008, 0); e.ECX&0xff != 3 || e.ECX>>12&0xf != 2 {
		t.Errorf("leaf 0x80000008 ECX %#x", e.ECX)
	}
}

func TestCPUIDTemplates(t *testing.T) {
	type bitCheck struct {
		fn, index uint32
		reg       int
		bits      uint32
	}
	// Bits that each template must have cleared (and that the recorded
	// host does offer, so that the check means something).
	tests := []struct {
		tmpl    Template
		cleared []bitCheck
		kept    []bitCheck
		xcr0    uint32 // leaf 0xd.0 EAX; 0 = leaf absent
		xsave   bool   // leaf 1 ECX XSAVE passes through
	}{
		{TemplateNone, []bitCheck{{1, 0, regECX, bit(5, 27)}}, []bitCheck{{7, 0, regEBX, bit(16)}, {1, 0, regECX, bit(23)}}, 0xe7, true},
		{TemplatePortable, []bitCheck{{7, 0, regEBX, bit(16, 17, 30, 31)}, {7, 1, regEAX, bit(4, 5)}}, []bitCheck{{1, 0, regECX, bit(23, 28)}, {7, 0, regEBX, bit(5, 7, 20)}}, 7, true},
		{TemplateEmulationSafe, []bitCheck{
			{1, 0, regECX, bit(23, 26, 27, 28)},
			{7, 0, regEBX, bit(0, 5, 7, 8, 20)},
			{7, 0, regEBX, bit(16)},
		}, []bitCheck{{1, 0, regEDX, bit(0, 25, 26)}}, 0, false},
	}
	sup := loadSupported(t)
	for _, tt := range tests {
		t.Run(string(tt.tmpl), func(t *testing.T) {
			es, err := NormalizeCPUID(sup, CPUIDConfig{VCPU: 0, VCPUs: 2, Template: tt.tmpl})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tt.cleared {
				if v := *register(findLeaf(es, c.fn, c.index), c.reg); v&c.bits != 0 {
					t.Errorf("leaf %#x.%d reg %d = %#x: bits %#x not cleared", c.fn, c.index, c.reg, v, v&c.bits)
				}
			}
			for _, c := range tt.kept {
				host := *register(findLeaf(sup, c.fn, c.index), c.reg) & c.bits
				if v := *register(findLeaf(es, c.fn, c.index), c.reg); v&c.bits != host {
					t.Errorf("leaf %#x.%d reg %d = %#x: lost host bits %#x", c.fn, c.index, c.reg, v, host)
				}
			}
			host := leaf(t, sup, 1, 0).ECX&(1<<26) != 0
			if got := leaf(t, es, 1, 0).ECX&(1<<26) != 0; got != (tt.xsave && host) {
				t.Errorf("XSAVE = %v (host %v)", got, host)
			}
			d := findLeaf(es, 0xd, 0)
			switch {
			case tt.xcr0 == 0 && d != nil:
				t.Errorf("leaf 0xd present: %+v", *d)
			case tt.xcr0 != 0 && (d == nil || d.EAX != tt.xcr0):
				t.Errorf("leaf 0xd = %+v, want components %#x", d, tt.xcr0)
			}
			if tt.tmpl == TemplatePortable {
				if d.ECX != 0x340 {
					t.Errorf("XSAVE area size %#x, want 0x340 (x87+SSE+AVX)", d.ECX)
				}
				for _, e := range es {
					if e.Function == 0xd && e.Index >= 5 {
						t.Errorf("AVX-512 XSAVE component %d left", e.Index)
					}
				}
			}
		})
	}
}

func TestNormalizeCPUIDErrors(t *testing.T) {
	sup := loadSupported(t)
	tests := []struct {
		name string
		sup  []kvm.CPUIDEntry
		cfg  CPUIDConfig
		want error
	}{
		{"no vCPUs", sup, CPUIDConfig{VCPU: 0, VCPUs: 0}, ErrVCPUCount},
		{"index past count", sup, CPUIDConfig{VCPU: 2, VCPUs: 2}, ErrVCPUCount},
		{"negative index", sup, CPUIDConfig{VCPU: -1, VCPUs: 2}, ErrVCPUCount},
		{"too many vCPUs", sup, CPUIDConfig{VCPU: 0, VCPUs: MaxVCPUs + 1}, ErrVCPUCount},
		{"unknown template", sup, CPUIDConfig{VCPUs: 1, Template: "t2"}, ErrTemplate},
		{"empty list", nil, CPUIDConfig{VCPUs: 1}, ErrCPUID},
		{"too long", make([]kvm.CPUIDEntry, MaxCPUIDEntries+1), CPUIDConfig{VCPUs: 1}, ErrCPUID},
	}
	for _, tt := range tests {
		if _, err := NormalizeCPUID(tt.sup, tt.cfg); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestParseTemplate(t *testing.T) {
	for _, name := range []string{"", "none", "portable", "emulation-safe"} {
		if _, err := ParseTemplate(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	if _, err := ParseTemplate("T2"); !errors.Is(err, ErrTemplate) {
		t.Errorf("T2: %v", err)
	}
	if got := Templates(); len(got) != 3 {
		t.Errorf("Templates() = %v", got)
	}
}
