package snapshot

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/kvm"
)

// Format version of the state file. A reader accepts any minor version of
// its major version and ignores sections it does not know.
const (
	FormatMajor = 1
	FormatMinor = 0
)

var stateMagic = [8]byte{'E', 'M', 'B', 'R', 'S', 'N', 'A', 'P'}

// Section tags of the state file, in the order they are written.
var (
	tagInfo    = [4]byte{'I', 'N', 'F', 'O'} // ids, kind, creation time, memory file name
	tagMachine = [4]byte{'M', 'A', 'C', 'H'} // vCPU count, CPU description, memory layout
	tagDirty   = [4]byte{'D', 'I', 'R', 'T'} // diff only: extents present in the memory file
	tagVM      = [4]byte{'K', 'V', 'M', 'V'} // VM-wide KVM state
	tagCPU     = [4]byte{'K', 'V', 'M', 'C'} // one per vCPU
	tagDevices = [4]byte{'D', 'E', 'V', 'S'} // named, versioned device blobs
)

// Limits on counts read from a file.
const (
	maxVCPUs      = 1024
	maxRegions    = 64
	maxExtents    = 1 << 24
	maxCPUID      = 1024
	maxMSRs       = 4096
	maxIRQChips   = 8
	maxDevices    = 1024
	maxDeviceBlob = 16 << 20
	maxName       = 256
	pageSize      = 4096
)

// ID names one point in a machine's life. A diff snapshot names its
// parent's ID; merging a diff onto its base yields a full snapshot with the
// diff's ID.
type ID [16]byte

// NewID returns a random ID.
func NewID() ID {
	var id ID
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails on Linux
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is unset.
func (id ID) IsZero() bool { return id == ID{} }

// Kind says what a snapshot's memory file holds.
type Kind uint8

// Snapshot kinds.
const (
	// KindFull: the memory file holds all of guest memory.
	KindFull Kind = 1
	// KindDiff: the memory file holds only the pages listed in State.Dirty,
	// written since the parent snapshot.
	KindDiff Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindFull:
		return "full"
	case KindDiff:
		return "diff"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// CPUInfo describes the CPU a snapshot was taken on, as far as a restore
// must match it.
type CPUInfo struct {
	// Vendor is the CPUID leaf 0 vendor string ("GenuineIntel", "AuthenticAMD").
	Vendor string
	// Signature is CPUID leaf 1 EAX: stepping, model, family.
	Signature uint32
}

// Family returns the display family encoded in Signature.
func (c CPUInfo) Family() uint32 {
	f := c.Signature >> 8 & 0xf
	if f == 0xf {
		f += c.Signature >> 20 & 0xff
	}
	return f
}

// cpuInfoFrom extracts the CPU description from CPUID entries.
func cpuInfoFrom(entries []kvm.CPUIDEntry) CPUInfo {
	var c CPUInfo
	for _, e := range entries {
		switch {
		case e.Function == 0 && c.Vendor == "" && e.EBX|e.ECX|e.EDX != 0:
			var v [12]byte
			for i, r := range []uint32{e.EBX, e.EDX, e.ECX} {
				v[4*i], v[4*i+1], v[4*i+2], v[4*i+3] = byte(r), byte(r>>8), byte(r>>16), byte(r>>24)
			}
			c.Vendor = string(v[:])
		case e.Function == 1 && c.Signature == 0:
			c.Signature = e.EAX
		}
	}
	return c
}

// RegionLayout places one guest memory region in the memory file.
type RegionLayout struct {
	GPA        uint64
	Size       uint64
	FileOffset uint64
}

// Extent is a page-aligned byte range of the memory file.
type Extent struct {
	Offset uint64
	Length uint64
}

// DeviceState is one device model's saved state: an opaque blob the device
// encodes and decodes itself, named and versioned so a restore can find it
// and refuse a version it does not know.
type DeviceState struct {
	Name    string
	Version uint32
	Data    []byte
}

// State is the content of a state file.
type State struct {
	ID      ID
	Parent  ID // the snapshot a diff applies to; zero for a full snapshot
	Kind    Kind
	Created time.Time
	// MemoryFile is the memory file's name inside the snapshot directory.
	MemoryFile string

	CPU     CPUInfo
	Regions []RegionLayout
	// Dirty lists, for a diff, the memory-file extents it carries (sorted,
	// disjoint, page-aligned). Pages in these extents that are holes in
	// the memory file are zero.
	Dirty []Extent

	Machine *vmm.MachineState
	Devices []DeviceState
}

// MemorySize returns the total guest memory size.
func (s *State) MemorySize() uint64 {
	var n uint64
	for _, r := range s.Regions {
		n += r.Size
	}
	return n
}

// Device returns the device state called name, if present.
func (s *State) Device(name string) (DeviceState, bool) {
	for _, d := range s.Devices {
		if d.Name == name {
			return d, true
		}
	}
	return DeviceState{}, false
}

// MarshalBinary encodes the state file.
func (s *State) MarshalBinary() ([]byte, error) {
	if err := validateHook(s); err != nil {
		return nil, err
	}
	var secs []section
	add := func(tag [4]byte, f func(e *encoder)) {
		e := &encoder{}
		f(e)
		secs = append(secs, section{tag: tag, version: 1, payload: e.b})
	}
	add(tagInfo, func(e *encoder) {
		e.raw(s.ID[:])
		e.raw(s.Parent[:])
		e.u8(uint8(s.Kind))
		e.u64(uint64(s.Created.UnixNano()))
		e.bytes([]byte(s.MemoryFile))
	})
	add(tagMachine, func(e *encoder) {
		e.u32(uint32(len(s.Machine.CPUs)))
		e.bytes([]byte(s.CPU.Vendor))
		e.u32(s.CPU.Signature)
		e.u32(pageSize)
		e.u32(uint32(len(s.Regions)))
		for _, r := range s.Regions {
			e.u64(r.GPA)
			e.u64(r.Size)
			e.u64(r.FileOffset)
		}
	})
	if s.Kind == KindDiff {
		add(tagDirty, func(e *encoder) {
			e.u32(uint32(len(s.Dirty)))
			for _, x := range s.Dirty {
				e.u64(x.Offset)
				e.u64(x.Length)
			}
		})
	}
	add(tagVM, func(e *encoder) { encodeVM(e, &s.Machine.VM) })
	for i := range s.Machine.CPUs {
		add(tagCPU, func(e *encoder) { encodeCPU(e, &s.Machine.CPUs[i]) })
	}
	add(tagDevices, func(e *encoder) {
		e.u32(uint32(len(s.Devices)))
		for _, d := range s.Devices {
			e.bytes([]byte(d.Name))
			e.u32(d.Version)
			e.bytes(d.Data)
		}
	})
	return frame(stateMagic, FormatMajor, FormatMinor, secs), nil
}

func encodeVM(e *encoder, v *vmm.VMState) {
	e.fixed(&v.Clock)
	if v.PIT != nil {
		e.u8(1)
		e.fixed(v.PIT)
	} else {
		e.u8(0)
	}
	e.u32(uint32(len(v.IRQChips)))
	for i := range v.IRQChips {
		e.fixed(&v.IRQChips[i])
	}
}

func encodeCPU(e *encoder, c *vmm.CPUState) {
	e.u32(uint32(c.ID))
	e.u32(uint32(len(c.CPUID)))
	for _, x := range c.CPUID {
		for _, v := range []uint32{x.Function, x.Index, x.Flags, x.EAX, x.EBX, x.ECX, x.EDX} {
			e.u32(v)
		}
	}
	e.u32(c.MPState.State)
	e.fixed(&c.Regs)
	e.fixed(&c.Sregs)
	e.fixed(c.XSave)
	e.fixed(&c.XCRs)
	e.fixed(&c.DebugRegs)
	e.fixed(c.LAPIC)
	e.u32(uint32(len(c.MSRs)))
	for _, m := range c.MSRs {
		e.u32(m.Index)
		e.u64(m.Data)
	}
	e.fixed(&c.Events)
	e.u32(c.TSCKHz)
}

// UnmarshalState decodes and validates a state file.
func UnmarshalState(b []byte) (*State, error) {
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%w: state file of %d bytes exceeds %d", ErrCorrupt, len(b), maxStateFile)
	}
	_, secs, err := unframe(b, stateMagic, FormatMajor)
	if err != nil {
		return nil, err
	}
	s := &State{Machine: &vmm.MachineState{}}
	seen := map[[4]byte]bool{}
	nCPU := -1
	for _, sec := range secs {
		if known(sec.tag) && sec.version != 1 {
			return nil, fmt.Errorf("%w: section %q version %d", ErrVersion, sec.tag[:], sec.version)
		}
		if sec.tag != tagCPU && seen[sec.tag] {
			return nil, fmt.Errorf("%w: section %q repeated", ErrCorrupt, sec.tag[:])
		}
		seen[sec.tag] = true
		d := &decoder{b: sec.payload}
		switch sec.tag {
		case tagInfo:
			copy(s.ID[:], d.take(16))
			copy(s.Parent[:], d.take(16))
			s.Kind = Kind(d.u8())
			s.Created = time.Unix(0, int64(d.u64()))
			s.MemoryFile = string(d.bytes(maxName))
		case tagMachine:
			nCPU = int(d.u32())
			s.CPU.Vendor = string(d.bytes(maxName))
			s.CPU.Signature = d.u32()
			if ps := d.u32(); d.err == nil && ps != pageSize {
				d.fail("page size %d, want %d", ps, pageSize)
			}
			n := d.count(24, maxRegions)
			for range n {
				s.Regions = append(s.Regions, RegionLayout{GPA: d.u64(), Size: d.u64(), FileOffset: d.u64()})
			}
		case tagDirty:
			n := d.count(16, maxExtents)
			s.Dirty = make([]Extent, 0, n)
			for range n {
				s.Dirty = append(s.Dirty, Extent{Offset: d.u64(), Length: d.u64()})
			}
		case tagVM:
			decodeVM(d, &s.Machine.VM)
		case tagCPU:
			var c vmm.CPUState
			decodeCPU(d, &c)
			s.Machine.CPUs = append(s.Machine.CPUs, c)
		case tagDevices:
			n := d.count(12, maxDevices)
			for range n {
				s.Devices = append(s.Devices, DeviceState{
					Name: string(d.bytes(maxName)), Version: d.u32(), Data: d.bytes(maxDeviceBlob),
				})
			}
		default:
			continue // a section from a newer minor version
		}
		if err := d.done(); err != nil {
			return nil, fmt.Errorf("section %q: %w", sec.tag[:], err)
		}
	}
	for _, t := range [][4]byte{tagInfo, tagMachine, tagVM, tagCPU, tagDevices} {
		if !seen[t] {
			return nil, fmt.Errorf("%w: section %q missing", ErrCorrupt, t[:])
		}
	}
	if nCPU != len(s.Machine.CPUs) {
		return nil, fmt.Errorf("%w: %d vCPUs declared, %d saved", ErrCorrupt, nCPU, len(s.Machine.CPUs))
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s, nil
}

func known(tag [4]byte) bool {
	switch tag {
	case tagInfo, tagMachine, tagDirty, tagVM, tagCPU, tagDevices:
		return true
	}
	return false
}

func decodeVM(d *decoder, v *vmm.VMState) {
	d.fixed(&v.Clock)
	switch d.u8() {
	case 0:
	case 1:
		v.PIT = new(kvm.PITState2)
		d.fixed(v.PIT)
	default:
		d.fail("bad PIT flag")
	}
	n := d.count(4+512, maxIRQChips)
	v.IRQChips = make([]kvm.IRQChip, n)
	for i := range v.IRQChips {
		d.fixed(&v.IRQChips[i])
	}
}

func decodeCPU(d *decoder, c *vmm.CPUState) {
	c.ID = int(d.u32())
	n := d.count(28, maxCPUID)
	c.CPUID = make([]kvm.CPUIDEntry, n)
	for i := range c.CPUID {
		x := &c.CPUID[i]
		x.Function, x.Index, x.Flags = d.u32(), d.u32(), d.u32()
		x.EAX, x.EBX, x.ECX, x.EDX = d.u32(), d.u32(), d.u32(), d.u32()
	}
	c.MPState.State = d.u32()
	d.fixed(&c.Regs)
	d.fixed(&c.Sregs)
	c.XSave = new(kvm.XSave)
	d.fixed(c.XSave)
	d.fixed(&c.XCRs)
	d.fixed(&c.DebugRegs)
	c.LAPIC = new(kvm.LAPICState)
	d.fixed(c.LAPIC)
	n = d.count(12, maxMSRs)
	c.MSRs = make([]kvm.MSREntry, n)
	for i := range c.MSRs {
		c.MSRs[i].Index, c.MSRs[i].Data = d.u32(), d.u64()
	}
	d.fixed(&c.Events)
	c.TSCKHz = d.u32()
}

// validateHook is what MarshalBinary validates with (tests replace it to
// write invalid files).
var validateHook = (*State).validate

// validate checks the invariants every state must satisfy, whether built
// by Save or read from a file.
func (s *State) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
	switch {
	case s.ID.IsZero():
		return bad("no snapshot ID")
	case s.Kind != KindFull && s.Kind != KindDiff:
		return bad("unknown kind %d", s.Kind)
	case s.Kind == KindDiff && s.Parent.IsZero():
		return bad("diff without a parent")
	case s.Kind == KindFull && len(s.Dirty) != 0:
		return bad("full snapshot with a dirty-page list")
	case !validFileName(s.MemoryFile):
		return bad("memory file name %q", s.MemoryFile)
	case s.Machine == nil || len(s.Machine.CPUs) == 0 || len(s.Machine.CPUs) > maxVCPUs:
		return bad("no vCPU state")
	case len(s.Regions) == 0 || len(s.Regions) > maxRegions:
		return bad("%d memory regions", len(s.Regions))
	case len(s.Devices) > maxDevices:
		return bad("%d devices", len(s.Devices))
	}
	var fileEnd, gpaEnd uint64
	for i, r := range s.Regions {
		if r.Size == 0 || r.GPA%pageSize != 0 || r.Size%pageSize != 0 || r.FileOffset%pageSize != 0 ||
			r.GPA+r.Size < r.GPA || r.FileOffset+r.Size < r.FileOffset {
			return bad("region %d [%#x,+%#x) at file offset %#x", i, r.GPA, r.Size, r.FileOffset)
		}
		if i > 0 && (r.GPA < gpaEnd || r.FileOffset != fileEnd) {
			return bad("region %d overlaps or is not packed in the memory file", i)
		}
		if i == 0 && r.FileOffset != 0 {
			return bad("first region at file offset %#x", r.FileOffset)
		}
		gpaEnd, fileEnd = r.GPA+r.Size, r.FileOffset+r.Size
	}
	var end uint64
	for i, x := range s.Dirty {
		if x.Length == 0 || x.Offset%pageSize != 0 || x.Length%pageSize != 0 ||
			x.Offset < end || x.Offset+x.Length < x.Offset || x.Offset+x.Length > fileEnd {
			return bad("dirty extent %d [%#x,+%#x)", i, x.Offset, x.Length)
		}
		end = x.Offset + x.Length
	}
	for i, c := range s.Machine.CPUs {
		if c.XSave == nil || c.LAPIC == nil {
			return bad("vCPU %d lacks XSAVE or LAPIC state", i)
		}
	}
	for _, d := range s.Devices {
		if d.Name == "" || len(d.Name) > maxName || len(d.Data) > maxDeviceBlob {
			return bad("device %q (%d bytes)", d.Name, len(d.Data))
		}
	}
	return nil
}

// validFileName accepts a plain file name: no directories, not "." or "..".
func validFileName(n string) bool {
	if n == "" || n == "." || n == ".." || len(n) > maxName {
		return false
	}
	for _, c := range n {
		if c == '/' || c == 0 {
			return false
		}
	}
	return true
}
