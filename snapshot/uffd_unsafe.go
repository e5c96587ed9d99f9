package snapshot

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd ABI (<linux/userfaultfd.h>), x86-64. The ioctl numbers are
// _IOWR/_IOR(0xAA, nr, sizeof(arg)); uffd_test.go checks the struct sizes.
const (
	uffdAPI             = 0xAA
	uffdEventPagefault  = 0x12
	uffdRegisterMissing = 1 << 0
	uffdModeDontWake    = 1 << 0 // UFFDIO_COPY_MODE_DONTWAKE, UFFDIO_ZEROPAGE_MODE_DONTWAKE
	uffdMsgSize         = 32
	uffdioAPI           = 0xc018aa3f // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister      = 0xc020aa00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioUnregister    = 0x8010aa01 // _IOR(0xAA, 0x01, struct uffdio_range)
	uffdioWake          = 0x8010aa02 // _IOR(0xAA, 0x02, struct uffdio_range)
	uffdioCopy          = 0xc028aa03 // _IOWR(0xAA, 0x03, struct uffdio_copy)
	uffdioZeropage      = 0xc020aa04 // _IOWR(0xAA, 0x04, struct uffdio_zeropage)
	userfaultfdIOCNew   = 0xaa00     // _IO(0xAA, 0x00) on /dev/userfaultfd
	userfaultfdDevice   = "/dev/userfaultfd"
	uffdRequiredIoctls  = 1<<0x03 | 1<<0x04 | 1<<0x02 // COPY, ZEROPAGE, WAKE
)

type uffdioAPIArg struct {
	API      uint64
	Features uint64
	Ioctls   uint64
}

type uffdioRange struct {
	Start uint64
	Len   uint64
}

type uffdioRegisterArg struct {
	Range  uffdioRange
	Mode   uint64
	Ioctls uint64
}

type uffdioCopyArg struct {
	Dst  uint64
	Src  uint64
	Len  uint64
	Mode uint64
	Copy int64
}

type uffdioZeropageArg struct {
	Range    uffdioRange
	Mode     uint64
	Zeropage int64
}

// uffd is a userfaultfd file descriptor. Its methods wrap each ioctl once,
// retrying EINTR.
type uffd struct{ fd int }

// newUFFD opens a userfaultfd (non-blocking, close-on-exec) that also
// catches faults the kernel takes on the process's behalf, as KVM does when
// it maps guest memory: the userfaultfd(2) system call, or
// /dev/userfaultfd where the call is not permitted.
func newUFFD() (*uffd, error) {
	flags := uintptr(unix.O_CLOEXEC | unix.O_NONBLOCK)
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, flags, 0, 0)
	if errno != 0 {
		dev, err := os.OpenFile(userfaultfdDevice, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("snapshot: userfaultfd: %w; %s: %w", os.NewSyscallError("userfaultfd", errno), userfaultfdDevice, err)
		}
		defer dev.Close()
		r, _, errno2 := unix.Syscall(unix.SYS_IOCTL, dev.Fd(), userfaultfdIOCNew, flags)
		if errno2 != 0 {
			return nil, fmt.Errorf("snapshot: USERFAULTFD_IOC_NEW: %w", errno2)
		}
		fd = r
	}
	u := &uffd{fd: int(fd)}
	api := uffdioAPIArg{API: uffdAPI}
	if err := u.ioctl("UFFDIO_API", uffdioAPI, unsafe.Pointer(&api)); err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

func (u *uffd) ioctl(name string, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(u.fd), req, uintptr(arg))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return os.NewSyscallError(name, errno)
	}
}

func (u *uffd) close() error { return unix.Close(u.fd) }

func addrOf(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

// register registers host (page-aligned) for missing-page faults.
func (u *uffd) register(host []byte) error {
	r := uffdioRegisterArg{Range: uffdioRange{Start: addrOf(host), Len: uint64(len(host))}, Mode: uffdRegisterMissing}
	if err := u.ioctl("UFFDIO_REGISTER", uffdioRegister, unsafe.Pointer(&r)); err != nil {
		return err
	}
	if r.Ioctls&uffdRequiredIoctls != uffdRequiredIoctls {
		return fmt.Errorf("snapshot: userfaultfd range supports ioctls %#x, need %#x", r.Ioctls, uffdRequiredIoctls)
	}
	return nil
}

// wake wakes the threads waiting on faults in [addr, addr+n).
func (u *uffd) wake(addr, n uint64) error {
	r := uffdioRange{Start: addr, Len: n}
	return u.ioctl("UFFDIO_WAKE", uffdioWake, unsafe.Pointer(&r))
}

// fill installs n bytes at dst, from src or (src nil) as zero pages,
// skipping pages that are already present. It returns how many bytes it
// installed. With dontWake the waiting threads are not woken.
func (u *uffd) fill(dst uint64, src []byte, n uint64, dontWake bool) (uint64, error) {
	var mode uint64
	if dontWake {
		mode = uffdModeDontWake
	}
	var installed uint64
	for done := uint64(0); done < n; {
		var res int64
		var err error
		if src != nil {
			a := uffdioCopyArg{Dst: dst + done, Src: addrOf(src[done:]), Len: n - done, Mode: mode}
			err = u.ioctl("UFFDIO_COPY", uffdioCopy, unsafe.Pointer(&a))
			res = a.Copy
		} else {
			a := uffdioZeropageArg{Range: uffdioRange{Start: dst + done, Len: n - done}, Mode: mode}
			err = u.ioctl("UFFDIO_ZEROPAGE", uffdioZeropage, unsafe.Pointer(&a))
			res = a.Zeropage
		}
		if res > 0 {
			done += uint64(res)
			installed += uint64(res)
		}
		switch {
		case err == nil:
			return installed, nil
		case errors.Is(err, unix.EAGAIN):
			// Partly done, or the mapping is changing: go on from done.
		case errors.Is(err, unix.EEXIST):
			// The page at done is already present (the other of the
			// fault handler and the installer got there first). Make sure
			// whoever waits on it wakes, and go past it.
			if !dontWake {
				if err := u.wake(dst+done, pageSize); err != nil {
					return installed, err
				}
			}
			done += pageSize
		default:
			return installed, err
		}
	}
	return installed, nil
}

// mapAnon maps n bytes of private anonymous memory.
func mapAnon(n uint64) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("snapshot: mmap %d anonymous bytes: %w", n, err)
	}
	return b, nil
}

// mapFile maps n bytes of f at off, private (copy-on-write): guest writes
// never reach the file.
func mapFile(f *os.File, off int64, n uint64) ([]byte, error) {
	b, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("snapshot: mmap %s: %w", f.Name(), err)
	}
	return b, nil
}
