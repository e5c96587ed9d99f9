package identity

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxEntropyBytes bounds one AddEntropy request.
const MaxEntropyBytes = 64 << 10

// rndAddEntropy is RNDADDENTROPY, _IOW('R', 0x03, int[2]).
const rndAddEntropy = 0x40085203

// AddEntropy mixes data into the kernel's random pool through
// RNDADDENTROPY on dev (normally /dev/random), crediting bits of entropy
// (0 credits 8 bits per byte). It needs CAP_SYS_ADMIN.
func AddEntropy(dev string, data []byte, bits int) error {
	if len(data) == 0 || len(data) > MaxEntropyBytes {
		return fmt.Errorf("%d bytes: %w", len(data), ErrInvalidEntropy)
	}
	if bits <= 0 || bits > 8*len(data) {
		bits = 8 * len(data)
	}
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(data)+3)
	binary.NativeEndian.PutUint32(buf[0:], uint32(bits))
	binary.NativeEndian.PutUint32(buf[4:], uint32(len(data)))
	copy(buf[8:], data)
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	defer f.Close()
	conn, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	var ioErr error
	if err := conn.Control(func(fd uintptr) {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, rndAddEntropy, uintptr(unsafe.Pointer(&buf[0])))
		if errno != 0 {
			ioErr = os.NewSyscallError("ioctl RNDADDENTROPY", errno)
		}
	}); err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	if ioErr != nil {
		return fmt.Errorf("add entropy: %w", ioErr)
	}
	return nil
}

// EntropyAvail reads /proc/sys/kernel/random/entropy_avail (-1 if unknown).
// On Linux 5.18 and later it reads 256 once the pool is initialized.
func EntropyAvail() int {
	b, err := os.ReadFile("/proc/sys/kernel/random/entropy_avail")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}
