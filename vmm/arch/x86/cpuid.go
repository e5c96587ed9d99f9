package x86

import (
	"fmt"
	"math/bits"

	"github.com/embervm/ember/vmm/kvm"
)

// MaxCPUIDEntries bounds the CPUID list (KVM's KVM_MAX_CPUID_ENTRIES).
const MaxCPUIDEntries = 256

// CPUIDConfig says which vCPU of which machine the CPUID is for.
type CPUIDConfig struct {
	// VCPU is the vCPU index; it is also its APIC id.
	VCPU int
	// VCPUs is the number of vCPUs in the VM.
	VCPUs int
	// Template is the CPU template; "" means TemplateNone.
	Template Template
}

// Bits of leaf 1 and 0x80000001 that ember always clears: features of the
// physical machine (thermal and power management, debug store, performance
// monitoring capabilities) and nested virtualization, which a microVM guest
// does not get.
var hostOnly = []cpuidMask{
	// ECX: DTES64 2, MONITOR 3, DS_CPL 4, VMX 5, SMX 6, EST 7, TM2 8,
	// PDCM 15, OSXSAVE 27 (mirrors the guest's CR4; KVM keeps it).
	{function: 1, reg: regECX, bits: bit(2, 3, 4, 5, 6, 7, 8, 15, 27)},
	// EDX: DS 21, ACPI 22, TM 29, PBE 31.
	{function: 1, reg: regEDX, bits: bit(21, 22, 29, 31)},
	// 0x80000001 ECX: SVM 2.
	{function: 0x80000001, reg: regECX, bits: bit(2)},
}

const (
	leaf1ECXHypervisor = 1 << 31
	leaf1EDXHTT        = 1 << 28
	kvmSignatureEBX    = 0x4b4d564b // "KVMK"
	kvmSignatureECX    = 0x564b4d56 // "VMKV"
	kvmSignatureEDX    = 0x0000004d // "M\0\0\0"
	kvmLeafFeatures    = 0x40000001
	topologySMT        = 1
	topologyCore       = 2
)

// vendor identifiers from leaf 0.
const (
	vendorAMDEBX   = 0x68747541 // "Auth"
	vendorHygonEBX = 0x6f677948 // "Hygo"
)

// IsAMD reports whether CPUID leaf 0 in entries names an AMD (or Hygon)
// CPU, whose KVM backend is SVM.
func IsAMD(entries []kvm.CPUIDEntry) bool {
	if l := findLeaf(entries, 0, 0); l != nil {
		return l.EBX == vendorAMDEBX || l.EBX == vendorHygonEBX
	}
	return false
}

// NormalizeCPUID returns the CPUID entries for one vCPU, derived from
// supported (KVM_GET_SUPPORTED_CPUID, not modified): the template's
// features hidden, host-only features cleared, the hypervisor bit set, the
// KVM paravirtual signature at 0x40000000, and the topology (one socket,
// one thread per core, VCPUs cores) with this vCPU's APIC id in leaves 1,
// 0xb, 0x1f and 0x8000001e.
func NormalizeCPUID(supported []kvm.CPUIDEntry, cfg CPUIDConfig) ([]kvm.CPUIDEntry, error) {
	if cfg.VCPUs < 1 || cfg.VCPUs > MaxVCPUs || cfg.VCPU < 0 || cfg.VCPU >= cfg.VCPUs {
		return nil, fmt.Errorf("%w: vCPU %d of %d", ErrVCPUCount, cfg.VCPU, cfg.VCPUs)
	}
	tmpl, err := ParseTemplate(string(cfg.Template))
	if err != nil {
		return nil, err
	}
	spec := templates[tmpl]
	if len(supported) > MaxCPUIDEntries {
		return nil, fmt.Errorf("%w: %d entries (at most %d)", ErrCPUID, len(supported), MaxCPUIDEntries)
	}
	if findLeaf(supported, 0, 0) == nil || findLeaf(supported, 1, 0) == nil {
		return nil, fmt.Errorf("%w: leaves 0 and 1 missing", ErrCPUID)
	}

	out := make([]kvm.CPUIDEntry, 0, len(supported)+4)
	for _, e := range supported {
		if dropped(spec, e.Function) || e.Function == 0xb || e.Function == 0x1f {
			continue
		}
		out = append(out, e)
	}
	for _, m := range append(append([]cpuidMask(nil), hostOnly...), spec.masks...) {
		applyMask(out, m)
	}
	if !spec.noXSAVE {
		out = limitXSAVE(out, spec.xcr0)
	}

	apicID := uint32(cfg.VCPU)
	n := uint32(cfg.VCPUs)
	coreBits := uint32(bits.Len32(n - 1)) // APIC id bits for the cores
	leaf0 := findLeaf(out, 0, 0)
	maxLeaf := leaf0.EAX
	amd := leaf0.EBX == vendorAMDEBX || leaf0.EBX == vendorHygonEBX

	for i := range out {
		e := &out[i]
		switch e.Function {
		case 1:
			e.EBX = apicID<<24 | n<<16 | e.EBX&0xff00
			e.ECX |= leaf1ECXHypervisor
			if n > 1 {
				e.EDX |= leaf1EDXHTT
			} else {
				e.EDX &^= leaf1EDXHTT
			}
		case 4:
			// Deterministic cache parameters: cores per package in
			// EAX[31:26], threads sharing the cache in EAX[25:14]: one
			// per core for L1/L2, all for L3.
			if e.EAX&0x1f == 0 {
				break
			}
			sharing := uint32(0)
			if level := e.EAX >> 5 & 7; level >= 3 {
				sharing = n - 1
			}
			e.EAX = e.EAX&0x3fff | sharing<<14 | (n-1)<<26
		case 6:
			// Thermal and power management: only ARAT (EAX bit 2).
			e.EAX &= 1 << 2
			e.EBX, e.ECX, e.EDX = 0, 0, 0
		case 0x40000000:
			e.EAX = max(e.EAX, kvmLeafFeatures)
			e.EBX, e.ECX, e.EDX = kvmSignatureEBX, kvmSignatureECX, kvmSignatureEDX
		case 0x80000008:
			if amd {
				// NC (cores - 1) and ApicIdCoreIdSize.
				e.ECX = e.ECX&^0xf0ff | coreBits<<12 | (n - 1)
			}
		case 0x8000001e:
			// AMD extended APIC id, compute unit (= core) id with one
			// thread per unit, one node.
			e.EAX = apicID
			e.EBX = apicID & 0xff
			e.ECX = 0
		}
	}
	if findLeaf(out, 0x40000000, 0) == nil {
		out = append(out, kvm.CPUIDEntry{Function: 0x40000000, EAX: kvmLeafFeatures,
			EBX: kvmSignatureEBX, ECX: kvmSignatureECX, EDX: kvmSignatureEDX})
	}
	for _, leaf := range []uint32{0xb, 0x1f} {
		if maxLeaf < leaf || (leaf == 0x1f && findLeaf(supported, 0x1f, 0) == nil) {
			continue
		}
		out = append(out, topologyLeaf(leaf, apicID, n, coreBits)...)
	}
	if len(out) > MaxCPUIDEntries {
		return nil, fmt.Errorf("%w: %d entries after normalization", ErrCPUID, len(out))
	}
	return out, nil
}

// topologyLeaf returns the subleaves of leaf 0xb or 0x1f (extended topology)
// for a package of n single-thread cores.
func topologyLeaf(leaf, apicID, n, coreBits uint32) []kvm.CPUIDEntry {
	flags := uint32(kvm.CPUIDFlagSignificantIndex)
	return []kvm.CPUIDEntry{
		// SMT level: no bits, one logical processor.
		{Function: leaf, Index: 0, Flags: flags, EAX: 0, EBX: 1, ECX: topologySMT<<8 | 0, EDX: apicID},
		// Core level: coreBits bits, n logical processors.
		{Function: leaf, Index: 1, Flags: flags, EAX: coreBits, EBX: n, ECX: topologyCore<<8 | 1, EDX: apicID},
		// Invalid level ends the enumeration.
		{Function: leaf, Index: 2, Flags: flags, ECX: 2, EDX: apicID},
	}
}

// dropped reports whether the template removes the leaf.
func dropped(spec templateSpec, fn uint32) bool {
	for _, l := range spec.dropLeaves {
		if l == fn {
			return true
		}
	}
	return false
}

// findLeaf returns the entry for fn and (if the entry's index is
// significant) index, or nil.
func findLeaf(es []kvm.CPUIDEntry, fn, index uint32) *kvm.CPUIDEntry {
	for i := range es {
		e := &es[i]
		if e.Function == fn && (e.Flags&kvm.CPUIDFlagSignificantIndex == 0 || e.Index == index) {
			return e
		}
	}
	return nil
}

// register returns a pointer to one register of e.
func register(e *kvm.CPUIDEntry, r int) *uint32 {
	switch r {
	case regEAX:
		return &e.EAX
	case regEBX:
		return &e.EBX
	case regECX:
		return &e.ECX
	default:
		return &e.EDX
	}
}

// applyMask clears m's bits in every matching entry.
func applyMask(es []kvm.CPUIDEntry, m cpuidMask) {
	for i := range es {
		e := &es[i]
		if e.Function != m.function {
			continue
		}
		if !m.anyIndex && e.Flags&kvm.CPUIDFlagSignificantIndex != 0 && e.Index != m.index {
			continue
		}
		*register(e, m.reg) &^= m.bits
	}
}

// legacyXSAVESize is the size of the legacy region and XSAVE header.
const legacyXSAVESize = 512 + 64

// limitXSAVE restricts leaf 0xd to the components in allowed: subleaves of
// other components are dropped, subleaf 0 reports only allowed components,
// and its maximum save area size is recomputed.
func limitXSAVE(es []kvm.CPUIDEntry, allowed uint64) []kvm.CPUIDEntry {
	out := es[:0]
	var comps uint64
	if e := findLeaf(es, 0xd, 0); e != nil {
		comps = (uint64(e.EDX)<<32 | uint64(e.EAX)) & allowed
	}
	size := uint32(legacyXSAVESize)
	for _, e := range es {
		if e.Function == 0xd && e.Index >= 2 && e.Index < 64 {
			if comps&(1<<e.Index) == 0 {
				continue
			}
			if end := e.EBX + e.EAX; e.EBX != 0 && end > size {
				size = end
			}
		}
		out = append(out, e)
	}
	if e := findLeaf(out, 0xd, 0); e != nil {
		e.EAX, e.EDX = uint32(comps), uint32(comps>>32)
		e.ECX = size
		e.EBX = min(e.EBX, size)
	}
	return out
}
