package x86

import (
	"encoding/binary"
	"errors"
	"testing"
)

func sum(b []byte) uint8 {
	var s uint8
	for _, c := range b {
		s += c
	}
	return s
}

func TestMPTable(t *testing.T) {
	le := binary.LittleEndian
	for _, n := range []int{1, 2, 4, MaxVCPUs} {
		tab, err := BuildMPTable(n)
		if err != nil {
			t.Fatalf("%d vCPUs: %v", n, err)
		}
		mpf, mpc := tab[:mpfSize], tab[mpfSize:]
		if string(mpf[:4]) != "_MP_" || sum(mpf) != 0 || le.Uint32(mpf[4:]) != MPTableStart+mpfSize || mpf[8] != 1 {
			t.Errorf("%d vCPUs: floating pointer %x", n, mpf)
		}
		if string(mpc[:4]) != "PCMP" || sum(mpc) != 0 || int(le.Uint16(mpc[4:])) != len(mpc) || le.Uint32(mpc[36:]) != LAPICAddr {
			t.Errorf("%d vCPUs: config table header %x", n, mpc[:mpcHeaderSize])
		}
		counts := map[byte]int{}
		var bsp, apicIDs []int
		e := mpc[mpcHeaderSize:]
		for len(e) > 0 {
			counts[e[0]]++
			size := mpEntrySize
			if e[0] == mpEntryProc {
				size = mpProcSize
				apicIDs = append(apicIDs, int(e[1]))
				if e[3]&mpCPUBoot != 0 {
					bsp = append(bsp, int(e[1]))
				}
				if e[3]&mpCPUEnabled == 0 {
					t.Errorf("%d vCPUs: cpu %d disabled", n, e[1])
				}
			}
			if e[0] == mpEntryIOAPIC && (e[1] != IOAPICID(n) || le.Uint32(e[4:]) != IOAPICAddr) {
				t.Errorf("%d vCPUs: IOAPIC entry %x", n, e[:8])
			}
			e = e[size:]
		}
		want := map[byte]int{mpEntryProc: n, mpEntryBus: 1, mpEntryIOAPIC: 1, mpEntryIOIntr: IOAPICPins, mpEntryLocIntr: 2}
		for typ, c := range want {
			if counts[typ] != c {
				t.Errorf("%d vCPUs: %d entries of type %d, want %d", n, counts[typ], typ, c)
			}
		}
		total := n + 1 + 1 + IOAPICPins + 2
		if int(le.Uint16(mpc[34:])) != total {
			t.Errorf("%d vCPUs: entry count %d, want %d", n, le.Uint16(mpc[34:]), total)
		}
		if len(bsp) != 1 || bsp[0] != 0 {
			t.Errorf("%d vCPUs: boot processors %v", n, bsp)
		}
		for i, id := range apicIDs {
			if id != i {
				t.Errorf("%d vCPUs: APIC ids %v", n, apicIDs)
				break
			}
		}
		if MPTableStart+len(tab) > 0xa0000 {
			t.Errorf("%d vCPUs: table of %d bytes leaves the EBDA", n, len(tab))
		}
	}
	for _, n := range []int{0, -1, MaxVCPUs + 1} {
		if _, err := BuildMPTable(n); !errors.Is(err, ErrVCPUCount) {
			t.Errorf("%d vCPUs: err = %v", n, err)
		}
	}
}

func TestWriteMPTable(t *testing.T) {
	mem := newMem(t, 1<<20)
	if err := WriteMPTable(mem, 2); err != nil {
		t.Fatal(err)
	}
	var sig [4]byte
	mem.ReadAt(sig[:], MPTableStart)
	if string(sig[:]) != "_MP_" {
		t.Fatalf("signature %q", sig)
	}
	if err := WriteMPTable(newMem(t, 0x10000), 2); !errors.Is(err, ErrMemory) {
		t.Fatalf("small memory: %v", err)
	}
}
