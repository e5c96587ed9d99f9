package mmio

import "fmt"

// Cmdline returns the kernel command-line parameter that declares a
// virtio-mmio device at base with interrupt line irq, for kernels built
// with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES:
//
//	virtio_mmio.device=4K@0xd0000000:5
//
// size is the device's window (normally Size); it is written with a K or
// M suffix when it is a whole number of them, as the kernel's memparse
// reads it.
func Cmdline(size, base uint64, irq uint32) string {
	var s string
	switch {
	case size != 0 && size%(1<<20) == 0:
		s = fmt.Sprintf("%dM", size>>20)
	case size != 0 && size%(1<<10) == 0:
		s = fmt.Sprintf("%dK", size>>10)
	default:
		s = fmt.Sprintf("%d", size)
	}
	return fmt.Sprintf("virtio_mmio.device=%s@%#x:%d", s, base, irq)
}
