package identity

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// SetClock steps CLOCK_REALTIME to t and returns how far it moved. A
// restored guest's clock stands where the snapshot was taken; stepping (not
// slewing) is what is wanted.
func SetClock(t time.Time) (time.Duration, error) {
	if t.IsZero() || t.Unix() <= 0 {
		return 0, fmt.Errorf("set clock to %v: %w", t, ErrInvalidTime)
	}
	before := time.Now()
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return 0, fmt.Errorf("set clock: %w", os.NewSyscallError("clock_settime", err))
	}
	return t.Sub(before), nil
}

// Uptime is the time since the guest booted, suspended time included.
func Uptime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, os.NewSyscallError("clock_gettime", err)
	}
	return time.Duration(ts.Nano()), nil
}
