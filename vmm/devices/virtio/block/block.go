package block

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// Config describes a block device.
type Config struct {
	// Path is the raw image file.
	Path string
	// ReadOnly opens the image read-only and offers VIRTIO_BLK_F_RO.
	ReadOnly bool
	// ID is the serial the guest reads with GET_ID (at most 20 bytes; the
	// driver shows it as /sys/block/vdX/serial).
	ID string
	// QueueSize is the request queue's maximum size; 0 means
	// DefaultQueueSize. It must be a power of two.
	QueueSize uint16
}

// State is a block device's state as plain data. The queue's state is the
// transport's.
type State struct {
	Config Config
	// Capacity is the image size the guest was told, in sectors.
	Capacity uint64
}

// Device is a virtio block device. It implements virtio.Device.
type Device struct {
	*virtio.Runner
	cfg      Config
	file     *os.File
	capacity uint64 // sectors
	id       [IDBytes]byte
	log      *slog.Logger
}

var _ virtio.Device = (*Device)(nil)

// New opens cfg.Path and returns the device.
func New(cfg Config) (*Device, error) {
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.QueueSize&(cfg.QueueSize-1) != 0 || cfg.QueueSize > virtio.MaxQueueSize {
		return nil, fmt.Errorf("%w: queue size %d", ErrConfig, cfg.QueueSize)
	}
	if len(cfg.ID) > IDBytes {
		return nil, fmt.Errorf("%w: ID %q longer than %d bytes", ErrConfig, cfg.ID, IDBytes)
	}
	flag := os.O_RDWR
	if cfg.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(cfg.Path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-block: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("virtio-block: %w", err)
	}
	d := &Device{cfg: cfg, file: f, capacity: uint64(fi.Size()) / SectorSize,
		log: slog.Default().With("device", "virtio-block", "path", cfg.Path)}
	copy(d.id[:], cfg.ID)
	d.Runner = virtio.NewRunner(d.process)
	return d, nil
}

// State returns the device's state.
func (d *Device) State() State { return State{Config: d.cfg, Capacity: d.capacity} }

// FromState reopens the image of a saved device. The image must have the
// capacity the guest was told.
func FromState(st State) (*Device, error) {
	d, err := New(st.Config)
	if err != nil {
		return nil, err
	}
	if d.capacity != st.Capacity {
		d.Close()
		return nil, fmt.Errorf("%w: %d sectors, snapshot has %d", ErrCapacityChanged, d.capacity, st.Capacity)
	}
	return d, nil
}

// Close closes the image. The device must be reset or never activated.
func (d *Device) Close() error { return d.file.Close() }

// Capacity returns the device size in sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx | FeatureFlush
	if d.cfg.ReadOnly {
		f |= FeatureRO
	}
	return f
}

// QueueMaxSizes implements virtio.Device: one request queue.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{d.cfg.QueueSize} }

// ReadConfig implements virtio.Device: struct virtio_blk_config, of which
// only capacity is set.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var cfg [configSize]byte
	binary.LittleEndian.PutUint64(cfg[0:], d.capacity)
	clear(data)
	if off < configSize {
		copy(data, cfg[off:])
	}
}

// WriteConfig implements virtio.Device; nothing in the configuration is
// writable (no VIRTIO_BLK_F_CONFIG_WCE).
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 {
		return fmt.Errorf("%w: %d queues", ErrConfig, len(a.Queues))
	}
	d.Start(a)
	return nil
}

// process serves the request queue.
func (d *Device) process(a *virtio.Activation, _ int) error {
	return virtio.Process(a.Queues[0], a.Signal, func(c *virtio.Chain) uint32 {
		return d.serve(a, c)
	})
}
