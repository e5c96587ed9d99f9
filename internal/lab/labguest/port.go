package labguest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrNoPort means the virtio-serial port to the host did not appear.
var ErrNoPort = errors.New("labguest: virtio-serial port not found")

// openPort waits up to d for the virtio-serial port called name to appear
// and opens it. Ports are probed asynchronously after virtio_console loads,
// and sysfs offers no event short of a netlink uevent listener, so this
// polls at a short interval.
func openPort(ctx context.Context, name string, d time.Duration) (*os.File, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if dev := findPort(name); dev != "" {
			f, err := os.OpenFile(dev, os.O_RDWR, 0)
			if err == nil {
				return f, nil
			}
			if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("labguest: open %s: %w", dev, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %q after %v", ErrNoPort, name, d)
		case <-tick.C:
		}
	}
}

// findPort returns the /dev path of the port called name, or "".
func findPort(name string) string {
	names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return "/dev/" + filepath.Base(filepath.Dir(n))
		}
	}
	return ""
}
