// Package rng is the virtio entropy device (virtio 1.x spec §5.4): it fills
// the driver's writable buffers with bytes from crypto/rand (the kernel's
// getrandom).
package rng

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// DefaultQueueSize is the request queue's maximum size.
const DefaultQueueSize = 256

// MaxRequest caps the entropy given per request, so that a guest posting
// huge buffers costs the host at most this much per chain.
const MaxRequest = 64 << 10

// ErrConfig: the device configuration is unusable.
var ErrConfig = errors.New("virtio-rng: bad configuration")

// Config describes an entropy device.
type Config struct {
	// QueueSize is the queue's maximum size; 0 means DefaultQueueSize.
	QueueSize uint16
	// Source overrides crypto/rand.Reader (tests).
	Source io.Reader `json:"-"`
}

// State is the device's state as plain data.
type State struct {
	QueueSize uint16
}

// Device is a virtio entropy device. It implements virtio.Device.
type Device struct {
	*virtio.Runner
	cfg Config
	buf []byte
}

var _ virtio.Device = (*Device)(nil)

// New returns an entropy device.
func New(cfg Config) (*Device, error) {
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.QueueSize&(cfg.QueueSize-1) != 0 || cfg.QueueSize > virtio.MaxQueueSize {
		return nil, fmt.Errorf("%w: queue size %d", ErrConfig, cfg.QueueSize)
	}
	if cfg.Source == nil {
		cfg.Source = rand.Reader
	}
	d := &Device{cfg: cfg}
	d.Runner = virtio.NewRunner(d.process)
	return d, nil
}

// State returns the device's state.
func (d *Device) State() State { return State{QueueSize: d.cfg.QueueSize} }

// FromState rebuilds a saved device.
func FromState(st State) (*Device, error) { return New(Config{QueueSize: st.QueueSize}) }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeRNG }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx
}

// QueueMaxSizes implements virtio.Device: one request queue.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{d.cfg.QueueSize} }

// ReadConfig implements virtio.Device; the device has no configuration.
func (d *Device) ReadConfig(_ uint64, data []byte) { clear(data) }

// WriteConfig implements virtio.Device.
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 {
		return fmt.Errorf("%w: %d queues", ErrConfig, len(a.Queues))
	}
	d.Start(a)
	return nil
}

func (d *Device) process(a *virtio.Activation, _ int) error {
	return virtio.Process(a.Queues[0], a.Signal, d.fill)
}

// fill writes entropy into a chain's writable buffers; readable buffers
// are ignored.
func (d *Device) fill(c *virtio.Chain) uint32 {
	w := c.Writer()
	n := min(w.Len(), MaxRequest)
	if uint64(cap(d.buf)) < n {
		d.buf = make([]byte, n)
	}
	b := d.buf[:n]
	if _, err := io.ReadFull(d.cfg.Source, b); err != nil {
		return 0
	}
	w.Write(b)
	return w.Written()
}
