package lab

import (
	"sync"
	"time"
)

func rdtsc() uint64

// tscKHz measures the host's TSC frequency once. QEMU's TCG reads the host
// TSC for the guest's RDTSC, and L1's kernel cannot reliably calibrate it
// against the emulated PIT (when it fails, boot stalls), so the host tells
// it the frequency with tsc_early_khz. Zero means unknown.
var tscKHz = sync.OnceValue(func() uint64 {
	const window = 20 * time.Millisecond
	t0, c0 := time.Now(), rdtsc()
	time.Sleep(window)
	c1, el := rdtsc(), time.Since(t0)
	if c1 <= c0 || el <= 0 {
		return 0
	}
	return uint64(float64(c1-c0) / el.Seconds() / 1000)
})
