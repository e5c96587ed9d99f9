package loader

import (
	"encoding/binary"
	"testing"

	"github.com/embervm/ember/vmm/memory"
)

// testMemSize is the guest memory the loader tests use.
const testMemSize = 64 << 20

func newMem(t testing.TB) *memory.Guest {
	t.Helper()
	g, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: testMemSize})
	if err != nil {
		t.Fatalf("guest memory: %v", err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// testSegment is a PT_LOAD segment of a synthetic ELF.
type testSegment struct {
	typ    uint32
	paddr  uint64
	data   []byte
	memsz  uint64
	offset uint64 // 0: placed after the previous data
}

// buildELF assembles a minimal ELF64 x86-64 executable.
func buildELF(entry uint64, segs ...testSegment) []byte {
	le := binary.LittleEndian
	phoff := uint64(elfHeaderSize)
	dataOff := phoff + uint64(len(segs))*elfPhdrSize
	out := make([]byte, dataOff)
	copy(out, elfMagic[:])
	out[elfIdentClass], out[elfIdentData], out[elfIdentVerOff] = elfClass64, elfData2LSB, elfVersion
	le.PutUint16(out[16:], elfTypeExec)
	le.PutUint16(out[18:], elfMachineX64)
	le.PutUint32(out[20:], elfVersion)
	le.PutUint64(out[24:], entry)
	le.PutUint64(out[32:], phoff)
	le.PutUint16(out[52:], elfHeaderSize)
	le.PutUint16(out[54:], elfPhdrSize)
	le.PutUint16(out[56:], uint16(len(segs)))
	for i, s := range segs {
		off := uint64(len(out))
		if s.offset != 0 {
			off = s.offset
		} else {
			out = append(out, s.data...)
		}
		typ := s.typ
		if typ == 0 {
			typ = elfPTLoad
		}
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		p := out[phoff+uint64(i)*elfPhdrSize:]
		le.PutUint32(p[0:], typ)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], s.paddr|0xffffffff80000000)
		le.PutUint64(p[24:], s.paddr)
		le.PutUint64(p[32:], uint64(len(s.data)))
		le.PutUint64(p[40:], memsz)
	}
	return out
}

// bzParams describes a synthetic bzImage.
type bzParams struct {
	version     uint16
	setupSects  uint8
	loadflags   uint8
	xloadflags  uint16
	relocatable uint8
	align       uint32
	pref        uint64
	initSize    uint32
	kernel      []byte
	hdrLen      uint8 // byte at 0x201: header end - 0x202
}

func defaultBz() bzParams {
	return bzParams{
		version:    0x020f,
		setupSects: 2,
		loadflags:  loadedHigh,
		xloadflags: xlfKernel64,
		align:      0x200000,
		pref:       0x1000000,
		initSize:   0x400000,
		kernel:     []byte("protected-mode kernel payload.."),
		hdrLen:     0x6a, // ends at 0x26c, like 6.1
	}
}

// buildBzImage assembles a bzImage with the given setup header fields.
func buildBzImage(p bzParams) []byte {
	le := binary.LittleEndian
	sects := int(p.setupSects)
	if sects == 0 {
		sects = defaultSects
	}
	out := make([]byte, (sects+1)*sectorSize)
	out[hdrSetupSectsOff] = p.setupSects
	le.PutUint32(out[hdrSyssizeOff:], uint32((len(p.kernel)+15)/16))
	le.PutUint16(out[hdrBootFlagOff:], hdrBootFlag)
	out[hdrJumpOff] = 0xeb
	out[hdrJumpOff+1] = p.hdrLen
	copy(out[hdrMagicOff:], hdrMagic)
	le.PutUint16(out[hdrVersionOff:], p.version)
	out[hdrLoadflagsOff] = p.loadflags
	le.PutUint32(out[hdrKernelAlignOff:], p.align)
	out[hdrRelocatableOff] = p.relocatable
	le.PutUint16(out[hdrXLoadflagsOff:], p.xloadflags)
	le.PutUint64(out[hdrPrefAddressOff:], p.pref)
	le.PutUint32(out[hdrInitSizeOff:], p.initSize)
	return append(out, p.kernel...)
}
