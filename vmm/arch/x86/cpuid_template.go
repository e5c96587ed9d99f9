package x86

import (
	"fmt"
	"sort"
)

// Template names a CPU model policy: which CPUID features the guest sees
// beyond what KVM supports.
type Template string

// CPU templates.
const (
	// TemplateNone passes through everything KVM supports (host CPU
	// model), after the normalization every template gets.
	TemplateNone Template = "none"
	// TemplatePortable hides features that differ across the x86-64 hosts
	// of a fleet or that cannot move with a snapshot: AVX-512, AMX, TSX,
	// MPX, SGX, PT, protection keys, WAITPKG, 5-level paging, MOVDIR*,
	// ENQCMD, XSAVES and every XSAVE component beyond x87/SSE/AVX. A
	// snapshot taken under it restores on any host that supports the rest.
	TemplatePortable Template = "portable"
	// TemplateEmulationSafe additionally hides what a software emulator of
	// guest kernel code (such as the development hosts' kvm_pvm, see
	// host-notes) lacks: the XSAVE family, AVX and everything VEX encoded,
	// POPCNT, LZCNT, BMI, ADX, MOVBE, SHA, AES-NI, PCLMULQDQ, RDRAND,
	// RDSEED, FSGSBASE, ERMS/FSRM, SMEP, SMAP, UMIP, PCID, INVPCID,
	// CLFLUSHOPT and CLWB.
	TemplateEmulationSafe Template = "emulation-safe"
)

// CPUID register selectors.
const (
	regEAX = iota
	regEBX
	regECX
	regEDX
)

// cpuidMask clears bits of one register of one leaf (all subleaves when
// anyIndex is set).
type cpuidMask struct {
	function, index uint32
	anyIndex        bool
	reg             int
	bits            uint32
}

// templateSpec is what a template changes.
type templateSpec struct {
	masks []cpuidMask
	// xcr0 is the set of XSAVE components the guest may enable.
	xcr0 uint64
	// noXSAVE hides XSAVE altogether (leaf 0xd is dropped).
	noXSAVE bool
	// dropLeaves lists leaves removed entirely.
	dropLeaves []uint32
}

// bit returns a mask with the given bit numbers set.
func bit(ns ...uint) uint32 {
	var m uint32
	for _, n := range ns {
		m |= 1 << n
	}
	return m
}

// XSAVE components.
const (
	xcr0X87 = 1 << 0
	xcr0SSE = 1 << 1
	xcr0AVX = 1 << 2
)

var portableMasks = []cpuidMask{
	// Leaf 7.0 EBX: SGX 2, HLE 4, RTM 11, MPX 14, AVX512F 16, AVX512DQ 17,
	// AVX512IFMA 21, PT 25, AVX512PF 26, AVX512ER 27, AVX512CD 28,
	// AVX512BW 30, AVX512VL 31.
	{function: 7, index: 0, reg: regEBX, bits: bit(2, 4, 11, 14, 16, 17, 21, 25, 26, 27, 28, 30, 31)},
	// Leaf 7.0 ECX: AVX512VBMI 1, PKU 3, OSPKE 4, WAITPKG 5, AVX512VBMI2 6,
	// CET_SS 7, AVX512VNNI 11, AVX512BITALG 12, TME 13, AVX512VPOPCNTDQ 14,
	// LA57 16, SGX_LC 30, MOVDIRI 27, MOVDIR64B 28, ENQCMD 29, PKS 31.
	{function: 7, index: 0, reg: regECX, bits: bit(1, 3, 4, 5, 6, 7, 11, 12, 13, 14, 16, 27, 28, 29, 30, 31)},
	// Leaf 7.0 EDX: AVX512_4VNNIW 2, AVX512_4FMAPS 3, AVX512_VP2INTERSECT 8,
	// TSXLDTRK 16, HYBRID 15, ARCH_LBR 19, CET_IBT 20, AMX_BF16 22,
	// AVX512_FP16 23, AMX_TILE 24, AMX_INT8 25.
	{function: 7, index: 0, reg: regEDX, bits: bit(2, 3, 8, 15, 16, 19, 20, 22, 23, 24, 25)},
	// Leaf 7.1 EAX: AVX_VNNI 4, AVX512_BF16 5 and later additions.
	{function: 7, index: 1, reg: regEAX, bits: ^uint32(0)},
	// Leaf 0xd.1 EAX: XSAVES 3, XFD 4.
	// Leaf 0xd.1 ECX/EDX: supervisor components (XSS), unusable without
	// XSAVES.
	{function: 0xd, index: 1, reg: regEAX, bits: bit(3, 4)},
	{function: 0xd, index: 1, reg: regECX, bits: ^uint32(0)},
	{function: 0xd, index: 1, reg: regEDX, bits: ^uint32(0)},
}

var emulationSafeMasks = []cpuidMask{
	// Leaf 1 ECX: PCLMULQDQ 1, FMA 12, PCID 17, MOVBE 22, POPCNT 23,
	// AES 25, XSAVE 26, OSXSAVE 27, AVX 28, F16C 29, RDRAND 30.
	{function: 1, reg: regECX, bits: bit(1, 12, 17, 22, 23, 25, 26, 27, 28, 29, 30)},
	// Leaf 7.0 EBX: FSGSBASE 0, BMI1 3, AVX2 5, SMEP 7, BMI2 8, ERMS 9,
	// INVPCID 10, RDSEED 18, ADX 19, SMAP 20, CLFLUSHOPT 23, CLWB 24,
	// SHA 29.
	{function: 7, index: 0, reg: regEBX, bits: bit(0, 3, 5, 7, 8, 9, 10, 18, 19, 20, 23, 24, 29)},
	// Leaf 7.0 ECX: UMIP 2, GFNI 8, VAES 9, VPCLMULQDQ 10, RDPID 22.
	{function: 7, index: 0, reg: regECX, bits: bit(2, 8, 9, 10, 22)},
	// Leaf 7.0 EDX: FSRM 4, SERIALIZE 14.
	{function: 7, index: 0, reg: regEDX, bits: bit(4, 14)},
	// Leaf 0x80000001 ECX: ABM/LZCNT 5, SSE4A 6, XOP 11, FMA4 16, TBM 21.
	{function: 0x80000001, reg: regECX, bits: bit(5, 6, 11, 16, 21)},
}

var templates = map[Template]templateSpec{
	TemplateNone: {xcr0: ^uint64(0)},
	TemplatePortable: {
		masks:      portableMasks,
		xcr0:       xcr0X87 | xcr0SSE | xcr0AVX,
		dropLeaves: []uint32{0x12, 0x14, 0x19, 0x1d, 0x1e},
	},
	TemplateEmulationSafe: {
		masks:      append(append([]cpuidMask(nil), portableMasks...), emulationSafeMasks...),
		xcr0:       xcr0X87 | xcr0SSE,
		noXSAVE:    true,
		dropLeaves: []uint32{0xd, 0x12, 0x14, 0x19, 0x1d, 0x1e},
	},
}

// ParseTemplate returns the template with the given name; "" means
// TemplateNone.
func ParseTemplate(name string) (Template, error) {
	if name == "" {
		return TemplateNone, nil
	}
	if _, ok := templates[Template(name)]; !ok {
		return "", fmt.Errorf("%w: %q (known: %v)", ErrTemplate, name, Templates())
	}
	return Template(name), nil
}

// Templates returns the names of all templates, sorted.
func Templates() []Template {
	var ts []Template
	for t := range templates {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts
}
