package kvm

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// APIVersion is the only KVM API version there has ever been.
const APIVersion = 12

// Sentinel errors of the system handle.
var (
	ErrAPIVersion = errors.New("kvm: unsupported KVM API version")
	ErrTooMany    = errors.New("kvm: more entries than the buffer holds")
)

// DevicePath is where the KVM device lives.
const DevicePath = "/dev/kvm"

// System is an open /dev/kvm.
type System struct {
	f        *os.File
	mmapSize int

	requireOnce sync.Once
	requireErr  error
}

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) { return OpenPath(DevicePath) }

// OpenPath opens the KVM device at path and checks the API version.
func OpenPath(path string) (*System, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: open %s: %w", path, err)
	}
	s := &System{f: f}
	v, err := s.APIVersion()
	if err != nil {
		f.Close()
		return nil, err
	}
	if v != APIVersion {
		f.Close()
		return nil, fmt.Errorf("%w: %d (want %d)", ErrAPIVersion, v, APIVersion)
	}
	sz, err := ioctl(s.fd(), ioctlGetVCPUMmapSize, 0)
	if err != nil {
		f.Close()
		return nil, wrap("KVM_GET_VCPU_MMAP_SIZE", err)
	}
	s.mmapSize = int(sz)
	return s, nil
}

func (s *System) fd() uintptr { return s.f.Fd() }

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return s.f.Close() }

// APIVersion returns KVM_GET_API_VERSION.
func (s *System) APIVersion() (int, error) {
	v, err := ioctl(s.fd(), ioctlGetAPIVersion, 0)
	return int(v), wrap("KVM_GET_API_VERSION", err)
}

// CheckExtension returns KVM_CHECK_EXTENSION's value for c: 0 when absent,
// otherwise 1 or a capability-specific number.
func (s *System) CheckExtension(c Cap) (int, error) {
	v, err := ioctl(s.fd(), ioctlCheckExtension, uintptr(c))
	return int(v), wrap("KVM_CHECK_EXTENSION", err)
}

// Require returns a *MissingCapError for the first of caps the host lacks.
func (s *System) Require(caps ...Cap) error {
	for _, c := range caps {
		v, err := s.CheckExtension(c)
		if err != nil {
			return err
		}
		if v == 0 {
			return &MissingCapError{Cap: c}
		}
	}
	return nil
}

// RequireAll checks RequiredCaps once per System and returns the same
// answer afterwards, so VM creation pays for it only the first time.
func (s *System) RequireAll() error {
	s.requireOnce.Do(func() { s.requireErr = s.Require(RequiredCaps...) })
	return s.requireErr
}

// VCPUMmapSize is the size of each vCPU's shared kvm_run area.
func (s *System) VCPUMmapSize() int { return s.mmapSize }

// CreateVM creates a virtual machine with the default machine type.
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctl(s.fd(), ioctlCreateVM, 0)
	if err != nil {
		return nil, wrap("KVM_CREATE_VM", err)
	}
	return &VM{f: os.NewFile(fd, "kvm-vm"), sys: s, mmapSize: s.mmapSize}, nil
}

// maxEntries bounds the variable-length lists the kernel fills in.
const maxEntries = 1024

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID: every CPUID leaf KVM can
// present to a guest on this host.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	var buf struct {
		Nent    uint32
		_       uint32
		Entries [maxEntries]CPUIDEntry
	}
	buf.Nent = maxEntries
	if _, err := ioctlPtr(s.fd(), ioctlGetSupportedCPUID, unsafe.Pointer(&buf)); err != nil {
		return nil, wrap("KVM_GET_SUPPORTED_CPUID", err)
	}
	out := make([]CPUIDEntry, buf.Nent)
	copy(out, buf.Entries[:buf.Nent])
	return out, nil
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs whose state a VMM
// must save and restore.
func (s *System) MSRIndexList() ([]uint32, error) {
	return s.msrList(ioctlGetMSRIndexList, "KVM_GET_MSR_INDEX_LIST")
}

func (s *System) msrList(req uintptr, name string) ([]uint32, error) {
	var buf struct {
		N       uint32
		Indices [maxEntries]uint32
	}
	buf.N = maxEntries
	if _, err := ioctlPtr(s.fd(), req, unsafe.Pointer(&buf)); err != nil {
		if errors.Is(err, unix.E2BIG) {
			return nil, fmt.Errorf("%s: %w (%d > %d)", name, ErrTooMany, buf.N, maxEntries)
		}
		return nil, wrap(name, err)
	}
	out := make([]uint32, buf.N)
	copy(out, buf.Indices[:buf.N])
	return out, nil
}
