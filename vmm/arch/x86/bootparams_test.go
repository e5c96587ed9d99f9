package x86

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/embervm/ember/vmm/memory"
)

// testSetupHeader returns a setup header as a 6.1 bzImage carries it.
func testSetupHeader(version uint16, cmdlineSize, initrdMax uint32) []byte {
	h := make([]byte, 0x26c-SetupHeaderOffset)
	le := binary.LittleEndian
	put := func(off int) []byte { return h[off-SetupHeaderOffset:] }
	put(0x1f1)[0] = 27
	le.PutUint16(put(hdrBootFlag), bootFlag)
	le.PutUint32(put(hdrMagic), magicHdrS)
	le.PutUint16(put(hdrVersion), version)
	put(hdrLoadflags)[0] = loadedHigh
	le.PutUint32(put(hdrInitrdAddrMax), initrdMax)
	le.PutUint32(put(hdrCmdlineSize), cmdlineSize)
	return h
}

func newMem(t *testing.T, size uint64) *memory.Guest {
	t.Helper()
	g, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func TestCmdlineLimits(t *testing.T) {
	bz := testSetupHeader(0x020f, 100, 0x7fffffff)
	tests := []struct {
		name    string
		hdr     []byte
		cmdline string
		want    error
	}{
		{"vmlinux at limit", nil, strings.Repeat("a", DefaultCmdlineSize-1), nil},
		{"vmlinux too long", nil, strings.Repeat("a", DefaultCmdlineSize), ErrCmdlineTooLong},
		{"bzImage at limit", bz, strings.Repeat("a", 100), nil},
		{"bzImage too long", bz, strings.Repeat("a", 101), ErrCmdlineTooLong},
		{"old protocol uses default", testSetupHeader(0x0205, 100, 0), strings.Repeat("a", 1000), nil},
		{"huge kernel limit capped by ember", testSetupHeader(0x020f, 1<<20, 0), strings.Repeat("a", CmdlineMaxSize), ErrCmdlineTooLong},
		{"NUL", nil, "console=ttyS0\x00evil", ErrCmdlineInvalid},
	}
	e820, _ := DefaultE820(64 << 20)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := BuildZeroPage(BootConfig{Cmdline: tt.cmdline, E820: e820, SetupHeader: tt.hdr})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBuildZeroPage(t *testing.T) {
	le := binary.LittleEndian
	e820, _ := DefaultE820(5 << 30)
	tests := []struct {
		name string
		hdr  []byte
	}{
		{"vmlinux", nil},
		{"bzImage", testSetupHeader(0x020f, 2047, 0x7fffffff)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := BootConfig{Cmdline: "console=ttyS0", E820: e820, InitrdAddr: 0x8000000, InitrdSize: 0x1234, SetupHeader: tt.hdr}
			zp, err := BuildZeroPage(cfg)
			if err != nil {
				t.Fatal(err)
			}
			checks := []struct {
				name   string
				off, n int
				want   uint64
			}{
				{"boot_flag", hdrBootFlag, 2, bootFlag},
				{"header", hdrMagic, 4, magicHdrS},
				{"type_of_loader", hdrTypeOfLoader, 1, 0xff},
				{"loadflags", hdrLoadflags, 1, loadedHigh | canUseHeap},
				{"cmd_line_ptr", hdrCmdLinePtr, 4, CmdlineStart},
				{"ext_cmd_line_ptr", bpExtCmdLinePtr, 4, 0},
				{"ramdisk_image", hdrRamdiskImage, 4, 0x8000000},
				{"ramdisk_size", hdrRamdiskSize, 4, 0x1234},
				{"e820_entries", bpE820Entries, 1, 3},
				{"e820[2].addr", bpE820Table + 2*e820EntrySize, 8, MMIOEnd},
				{"e820[2].size", bpE820Table + 2*e820EntrySize + 8, 8, 2 << 30},
				{"e820[2].type", bpE820Table + 2*e820EntrySize + 16, 4, 1},
			}
			for _, c := range checks {
				var got uint64
				switch c.n {
				case 1:
					got = uint64(zp[c.off])
				case 2:
					got = uint64(le.Uint16(zp[c.off:]))
				case 4:
					got = uint64(le.Uint32(zp[c.off:]))
				case 8:
					got = le.Uint64(zp[c.off:])
				}
				if got != c.want {
					t.Errorf("%s = %#x, want %#x", c.name, got, c.want)
				}
			}
			if tt.hdr != nil {
				if zp[0x1f1] != 27 || le.Uint32(zp[hdrCmdlineSize:]) != 2047 {
					t.Errorf("setup header not copied (setup_sects %d, cmdline_size %d)", zp[0x1f1], le.Uint32(zp[hdrCmdlineSize:]))
				}
			}
		})
	}
}

func TestBuildZeroPageErrors(t *testing.T) {
	e820, _ := DefaultE820(64 << 20)
	bad := testSetupHeader(0x020f, 2047, 0)
	bad[hdrMagic-SetupHeaderOffset] = 'X'
	tests := []struct {
		name string
		cfg  BootConfig
		want error
	}{
		{"no e820", BootConfig{}, ErrE820Range},
		{"bad header magic", BootConfig{E820: e820, SetupHeader: bad}, ErrSetupHeader},
		{"header too long", BootConfig{E820: e820, SetupHeader: make([]byte, 0x100)}, ErrSetupHeader},
		{"initrd wraps", BootConfig{E820: e820, InitrdAddr: ^uint64(0) - 1, InitrdSize: 4}, ErrInitrdNoFit},
	}
	for _, tt := range tests {
		if _, err := BuildZeroPage(tt.cfg); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestPlaceInitrd(t *testing.T) {
	tests := []struct {
		name               string
		lowEnd, kEnd, size uint64
		hdr                []byte
		want               uint64
		err                error
	}{
		{"top of 256 MiB", 256 << 20, 0x2000000, 0x1800, nil, 256<<20 - 0x2000, nil},
		{"capped by MMIO hole", 8 << 30, 0x2000000, 0x1000, nil, 0x7ffff000, nil},
		{"capped by initrd_addr_max", 1 << 30, 0x2000000, 0x1000, testSetupHeader(0x020f, 2047, 0x37ffffff), 0x37fff000, nil},
		{"overlaps kernel", 64 << 20, 60 << 20, 8 << 20, nil, 0, ErrInitrdNoFit},
		{"bigger than memory", 64 << 20, 0, 128 << 20, nil, 0, ErrInitrdNoFit},
		{"empty", 64 << 20, 0, 0, nil, 0, ErrInitrdNoFit},
	}
	for _, tt := range tests {
		got, err := PlaceInitrd(tt.lowEnd, tt.kEnd, tt.size, tt.hdr)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("%s: %#x, %v; want %#x, %v", tt.name, got, err, tt.want, tt.err)
		}
	}
}

func TestWriteBootParams(t *testing.T) {
	mem := newMem(t, 64<<20)
	e820, _ := DefaultE820(64 << 20)
	cfg := BootConfig{Cmdline: "console=ttyS0 panic=-1", E820: e820}
	if err := WriteBootParams(mem, cfg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(cfg.Cmdline)+1)
	mem.ReadAt(got, CmdlineStart)
	if !bytes.Equal(got, append([]byte(cfg.Cmdline), 0)) {
		t.Errorf("command line in memory: %q", got)
	}
	zp := make([]byte, ZeroPageSize)
	mem.ReadAt(zp, ZeroPageStart)
	want, _ := BuildZeroPage(cfg)
	if !bytes.Equal(zp, want) {
		t.Errorf("zero page in memory differs from BuildZeroPage")
	}
	// Memory too small for the command line area.
	small := newMem(t, 0x8000)
	if err := WriteBootParams(small, cfg); !errors.Is(err, ErrMemory) {
		t.Errorf("small memory: %v", err)
	}
}
