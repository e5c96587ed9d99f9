package x86

import (
	"encoding/binary"
	"fmt"

	"github.com/embervm/ember/vmm/memory"
)

// MaxVCPUs is the most vCPUs the boot layout describes: the MP table must
// fit in the 1 KiB EBDA at MPTableStart.
const MaxVCPUs = 32

// MP table (Intel MultiProcessor Specification 1.4) layout.
const (
	mpfSize        = 16 // MP floating pointer structure
	mpcHeaderSize  = 44 // MP configuration table header
	mpProcSize     = 20
	mpEntrySize    = 8 // bus, IOAPIC, I/O and local interrupt entries
	mpSpecRev      = 4
	mpEntryProc    = 0
	mpEntryBus     = 1
	mpEntryIOAPIC  = 2
	mpEntryIOIntr  = 3
	mpEntryLocIntr = 4
	mpIntINT       = 0
	mpIntNMI       = 1
	mpIntExtINT    = 3
	mpCPUEnabled   = 1 << 0
	mpCPUBoot      = 1 << 1
	mpAPICVersion  = 0x14
	mpIOAPICVer    = 0x11
	mpCPUSignature = 0x600    // family 6
	mpCPUFeatures  = 0x201    // FPU, APIC
	mpISABus       = "ISA   " // bus type string, 6 bytes
	mpEBDASize     = 0xa0000 - MPTableStart
	mpAllLAPICs    = 0xff
)

// IOAPICID returns the IOAPIC's id in an MP table for vcpus vCPUs: the first
// id after the vCPUs' APIC ids.
func IOAPICID(vcpus int) uint8 { return uint8(vcpus) }

// MPTableSize returns the number of bytes BuildMPTable produces.
func MPTableSize(vcpus int) int {
	entries := 1 + 1 + IOAPICPins + 2 // bus, IOAPIC, I/O interrupts, LINT0/LINT1
	return mpfSize + mpcHeaderSize + vcpus*mpProcSize + entries*mpEntrySize
}

// checksum returns the byte that makes b sum to zero.
func checksum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return -s
}

// BuildMPTable returns the MP floating pointer structure followed by the MP
// configuration table, to be placed at MPTableStart. It lists one processor
// per vCPU (APIC ids 0..vcpus-1, vCPU 0 the bootstrap processor), an ISA
// bus, the IOAPIC at IOAPICAddr with id IOAPICID(vcpus), an I/O interrupt
// entry per IOAPIC pin (ISA IRQ n to pin n) and the local interrupts (the
// PIC's ExtINT on LINT0, NMI on LINT1 of every CPU). Both structures carry
// valid checksums.
func BuildMPTable(vcpus int) ([]byte, error) {
	if vcpus < 1 || vcpus > MaxVCPUs {
		return nil, fmt.Errorf("%w: %d (1 to %d)", ErrVCPUCount, vcpus, MaxVCPUs)
	}
	le := binary.LittleEndian
	out := make([]byte, MPTableSize(vcpus))
	mpf, mpc := out[:mpfSize], out[mpfSize:]

	// Configuration table entries, after the header.
	e := mpc[mpcHeaderSize:]
	count := 0
	for i := 0; i < vcpus; i++ {
		flags := uint8(mpCPUEnabled)
		if i == 0 {
			flags |= mpCPUBoot
		}
		e[0], e[1], e[2], e[3] = mpEntryProc, uint8(i), mpAPICVersion, flags
		le.PutUint32(e[4:], mpCPUSignature)
		le.PutUint32(e[8:], mpCPUFeatures)
		e, count = e[mpProcSize:], count+1
	}
	e[0], e[1] = mpEntryBus, 0
	copy(e[2:8], mpISABus)
	e, count = e[mpEntrySize:], count+1

	ioapic := IOAPICID(vcpus)
	e[0], e[1], e[2], e[3] = mpEntryIOAPIC, ioapic, mpIOAPICVer, 1
	le.PutUint32(e[4:], IOAPICAddr)
	e, count = e[mpEntrySize:], count+1

	for pin := 0; pin < IOAPICPins; pin++ {
		// type, interrupt type, flags (conforming), source bus, bus IRQ,
		// destination IOAPIC, its pin.
		e[0], e[1] = mpEntryIOIntr, mpIntINT
		le.PutUint16(e[2:], 0)
		e[4], e[5], e[6], e[7] = 0, uint8(pin), ioapic, uint8(pin)
		e, count = e[mpEntrySize:], count+1
	}
	e[0], e[1] = mpEntryLocIntr, mpIntExtINT
	e[4], e[5], e[6], e[7] = 0, 0, mpAllLAPICs, 0
	e, count = e[mpEntrySize:], count+1
	e[0], e[1] = mpEntryLocIntr, mpIntNMI
	e[4], e[5], e[6], e[7] = 0, 0, mpAllLAPICs, 1
	count++

	copy(mpc[0:4], "PCMP")
	le.PutUint16(mpc[4:], uint16(len(mpc)))
	mpc[6] = mpSpecRev
	copy(mpc[8:16], "EMBER   ")
	copy(mpc[16:28], "MICROVM     ")
	le.PutUint16(mpc[34:], uint16(count))
	le.PutUint32(mpc[36:], LAPICAddr)
	mpc[7] = checksum(mpc)

	copy(mpf[0:4], "_MP_")
	le.PutUint32(mpf[4:], MPTableStart+mpfSize)
	mpf[8], mpf[9] = 1, mpSpecRev // length in 16-byte units, revision
	mpf[10] = checksum(mpf)
	return out, nil
}

// WriteMPTable writes the MP table for vcpus vCPUs at MPTableStart, inside
// the EBDA, where Linux looks for it.
func WriteMPTable(mem memory.Accessor, vcpus int) error {
	t, err := BuildMPTable(vcpus)
	if err != nil {
		return err
	}
	if len(t) > mpEBDASize {
		return fmt.Errorf("%w: MP table of %d bytes exceeds the EBDA", ErrVCPUCount, len(t))
	}
	if err := mem.WriteAt(t, MPTableStart); err != nil {
		return fmt.Errorf("%w: MP table: %w", ErrMemory, err)
	}
	return nil
}
