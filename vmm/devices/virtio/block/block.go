package block

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// Config describes a block device.
type Config struct {
	// Path is the raw image file (a regular file or a block device). A
	// spare drive may leave it empty: it starts with no backing file.
	Path string
	// ReadOnly opens the image read-only and offers VIRTIO_BLK_F_RO (a
	// spare drive never offers it: see Spare).
	ReadOnly bool
	// ID is the serial the guest reads with GET_ID (at most 20 bytes; the
	// driver shows it as /sys/block/vdX/serial).
	ID string
	// QueueSize is the request queue's maximum size; 0 means
	// DefaultQueueSize. It must be a power of two.
	QueueSize uint16
	// Spare makes the drive a slot whose backing file is set, replaced and
	// removed at run time (Attach, Detach), since virtio-mmio has no
	// hotplug. Without a backing file it has capacity 0: every read and
	// write fails with IOERR, FLUSH and GET_ID succeed. The guest learns of
	// an attach or detach through a configuration-change interrupt (Linux
	// re-reads the capacity). Features are fixed when the driver probes,
	// so a spare drive never offers VIRTIO_BLK_F_RO: a read-only
	// attachment answers writes with IOERR, and the guest should mount it
	// read-only. Path and ReadOnly describe the current attachment.
	Spare bool
}

// State is a block device's state as plain data. The queue's state is the
// transport's.
type State struct {
	Config Config
	// Capacity is the image size the guest was told, in sectors (0 for an
	// empty spare drive).
	Capacity uint64
}

// Device is a virtio block device. It implements virtio.Device.
type Device struct {
	*virtio.Runner
	queueSize uint16
	spare     bool
	offerRO   bool // fixed at New: the guest negotiated with it

	// mu guards the backing file and what describes it. Requests hold it
	// for reading while they use the file; Attach and Detach hold it for
	// writing, so a request is served wholly by the old file or wholly by
	// the new one.
	mu       sync.RWMutex
	path     string
	readOnly bool
	file     *os.File // nil: an empty spare drive
	closed   bool     // Close ran: Attach refuses
	capacity uint64   // sectors
	id       [IDBytes]byte
	idStr    string
	log      *slog.Logger
	sig      virtio.Signaller // while active: raises config changes
}

var _ virtio.Device = (*Device)(nil)

// New opens cfg.Path and returns the device; a spare drive without a path
// starts empty.
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
	if cfg.Path == "" && !cfg.Spare {
		return nil, fmt.Errorf("%w: no image path", ErrConfig)
	}
	d := &Device{queueSize: cfg.QueueSize, spare: cfg.Spare, offerRO: cfg.ReadOnly && !cfg.Spare, idStr: cfg.ID}
	copy(d.id[:], cfg.ID)
	d.log = slog.Default().With("device", "virtio-block", "id", cfg.ID)
	if cfg.Path != "" {
		f, capacity, err := openImage(cfg.Path, cfg.ReadOnly)
		if err != nil {
			return nil, err
		}
		d.path, d.readOnly, d.file, d.capacity = cfg.Path, cfg.ReadOnly, f, capacity
		d.log = d.log.With("path", cfg.Path)
	}
	d.Runner = virtio.NewRunner(d.process)
	return d, nil
}

// openImage opens a raw image and returns it with its size in sectors.
func openImage(path string, readOnly bool) (*os.File, uint64, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("virtio-block: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("virtio-block: %w", err)
	}
	size := fi.Size()
	switch {
	case fi.Mode().IsRegular():
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		// A block device's size is where its end is.
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("virtio-block: size of %s: %w", path, err)
		}
	default:
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is not a regular file or block device", ErrConfig, path)
	}
	return f, uint64(size) / SectorSize, nil
}

// State returns the device's state: for a spare drive, its current
// attachment (an empty path when it has none).
func (d *Device) State() State {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return State{Config: d.configLocked(), Capacity: d.capacity}
}

func (d *Device) configLocked() Config {
	return Config{Path: d.path, ReadOnly: d.readOnly, ID: d.idStr, QueueSize: d.queueSize, Spare: d.spare}
}

// FromState reopens the image of a saved device. The image must have the
// capacity the guest was told. A spare drive saved empty comes back empty;
// one saved with a backing file reopens it (ErrCapacityChanged if its size
// changed), like any other drive.
func FromState(st State) (*Device, error) {
	if st.Config.Spare && st.Config.Path == "" && st.Capacity != 0 {
		return nil, fmt.Errorf("%w: empty spare drive with capacity %d", ErrConfig, st.Capacity)
	}
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
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.file == nil {
		return nil
	}
	err := d.file.Close()
	d.file = nil
	return err
}

// Capacity returns the device size in sectors.
func (d *Device) Capacity() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.capacity
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	f := virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx | FeatureFlush
	if d.offerRO {
		f |= FeatureRO
	}
	return f
}

// QueueMaxSizes implements virtio.Device: one request queue.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{d.queueSize} }

// ReadConfig implements virtio.Device: struct virtio_blk_config, of which
// only capacity is set.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var cfg [configSize]byte
	binary.LittleEndian.PutUint64(cfg[0:], d.Capacity())
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
	d.mu.Lock()
	d.sig = a.Signal
	d.mu.Unlock()
	d.Start(a)
	return nil
}

// Reset implements virtio.Device.
func (d *Device) Reset() {
	d.Runner.Reset()
	d.mu.Lock()
	d.sig = nil
	d.mu.Unlock()
}

// process serves the request queue.
func (d *Device) process(a *virtio.Activation, _ int) error {
	return virtio.Process(a.Queues[0], a.Signal, func(c *virtio.Chain) uint32 {
		return d.serve(a, c)
	})
}
