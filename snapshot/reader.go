package snapshot

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/embervm/ember/vmm"
)

// Snapshot is a snapshot directory whose state file has been read and
// checked, and whose memory file has the size the state declares.
type Snapshot struct {
	// Dir is the snapshot directory.
	Dir string
	// State is the decoded state file.
	State *State
	// OpenedAt is when Open began reading it: a restore's duration counts
	// from there, whoever opened it.
	OpenedAt time.Time
}

// Open reads and validates dir's state file and checks its memory file.
// Damaged files yield errors wrapping ErrBadMagic, ErrVersion, ErrChecksum,
// ErrTruncated or ErrCorrupt.
func Open(dir string) (*Snapshot, error) {
	t0 := time.Now()
	b, err := readLimited(filepath.Join(dir, StateFile), maxStateFile)
	if err != nil {
		return nil, err
	}
	st, err := UnmarshalState(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	s := &Snapshot{Dir: dir, State: st, OpenedAt: t0}
	fi, err := os.Stat(s.MemoryPath())
	if err != nil {
		return nil, fmt.Errorf("snapshot: memory file: %w", err)
	}
	want := int64(st.MemorySize())
	switch {
	case fi.Size() < want:
		return nil, fmt.Errorf("%w: memory file %s has %d bytes, state needs %d", ErrTruncated, s.MemoryPath(), fi.Size(), want)
	case fi.Size() > want:
		return nil, fmt.Errorf("%w: memory file %s has %d bytes, state declares %d", ErrCorrupt, s.MemoryPath(), fi.Size(), want)
	}
	return s, nil
}

// readLimited reads a whole file of at most max bytes.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrCorrupt, path, fi.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("snapshot: reading %s: %w", path, err)
	}
	return b, nil
}

// MemoryPath returns the memory file's path.
func (s *Snapshot) MemoryPath() string { return filepath.Join(s.Dir, s.State.MemoryFile) }

// WorkingSetPath returns where the working-set file lives.
func (s *Snapshot) WorkingSetPath() string { return filepath.Join(s.Dir, WorkingSetFile) }

// Check reports whether the snapshot can be restored into m: a full
// snapshot with as many vCPUs, the same memory layout, and a CPU of the
// same vendor as the host's KVM reports. Errors wrap ErrMismatch or ErrDiff.
func (s *Snapshot) Check(m *vmm.Machine) error {
	st := s.State
	if st.Kind != KindFull {
		return fmt.Errorf("%w: %s is a diff on %s; merge it onto its base first", ErrDiff, st.ID, st.Parent)
	}
	if got, want := len(m.VCPUs()), len(st.Machine.CPUs); got != want {
		return fmt.Errorf("%w: snapshot has %d vCPUs, machine %d", ErrMismatch, want, got)
	}
	regions := m.Memory().Regions()
	if len(regions) != len(st.Regions) {
		return fmt.Errorf("%w: snapshot has %d memory regions, machine %d", ErrMismatch, len(st.Regions), len(regions))
	}
	for i, r := range regions {
		if l := st.Regions[i]; r.GPA() != l.GPA || r.Size() != l.Size {
			return fmt.Errorf("%w: memory region %d is [%#x,+%#x) in the snapshot, [%#x,+%#x) in the machine",
				ErrMismatch, i, l.GPA, l.Size, r.GPA(), r.Size())
		}
	}
	cpuid, err := m.System().SupportedCPUID()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return s.checkCPU(cpuInfoFrom(cpuid))
}

func (s *Snapshot) checkCPU(host CPUInfo) error {
	if host.Vendor != s.State.CPU.Vendor {
		return fmt.Errorf("%w: snapshot taken on a %q CPU, this host is %q", ErrMismatch, s.State.CPU.Vendor, host.Vendor)
	}
	return nil
}

// Restore checks the snapshot against m and writes its KVM state into m's
// VM and vCPUs. m's memory must already hold (or serve) the snapshot's
// memory; see OpenMemory. Device states are the caller's to restore.
func Restore(ctx context.Context, m *vmm.Machine, s *Snapshot) error {
	if err := s.Check(m); err != nil {
		return err
	}
	if err := m.RestoreState(ctx, s.State.Machine); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}
