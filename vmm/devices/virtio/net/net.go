package net

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// Feature bits (spec §5.1.3).
const (
	// FeatureMAC: the device has a MAC address in configuration space.
	FeatureMAC uint64 = 1 << 5
)

const (
	// RXQueue and TXQueue are the queue indexes.
	RXQueue = 0
	TXQueue = 1
	// HdrSize is struct virtio_net_hdr_v1, in front of every frame.
	HdrSize = 12
	// MaxFrame is the largest frame (Ethernet header included, virtio-net
	// header not) the device moves.
	MaxFrame = 65550
	// DefaultQueueSize is each queue's maximum size.
	DefaultQueueSize = 256
	// configSize covers mac[6] and status (not offered, zero).
	configSize = 8
)

// Sentinel errors.
var (
	// ErrConfig: the device configuration is unusable.
	ErrConfig = errors.New("virtio-net: bad configuration")
)

// Backend moves frames to and from the host. Each Read returns one frame
// and each Write sends one, both preceded by a HdrSize-byte virtio-net
// header; Read blocks until a frame arrives, and Close makes a blocked Read
// return an error. *tap.Device is one.
type Backend interface {
	io.Reader
	io.Writer
	io.Closer
}

// Config describes a network device.
type Config struct {
	// MAC is the guest's address, offered in configuration space.
	MAC [6]byte
	// QueueSize is each queue's maximum size; 0 means DefaultQueueSize.
	QueueSize uint16
	// HostDevName names the backend (the TAP interface), for logs and for
	// the VMM to recreate it on restore.
	HostDevName string
}

// State is the device's state as plain data. The queues' state is the
// transport's; frames in flight are not saved (a network may drop them).
type State struct {
	Config Config
}

// Stats counts frames.
type Stats struct {
	RXFrames, RXDropped, TXFrames, TXDropped uint64
}

// Device is a virtio network device. It implements virtio.Device.
type Device struct {
	*virtio.Runner
	cfg     Config
	backend Backend
	log     *slog.Logger
	txBuf   []byte // used under the runner's lock

	rxWake    chan struct{}
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	rxFrames, rxDropped, txFrames, txDropped atomic.Uint64
}

var _ virtio.Device = (*Device)(nil)

// New returns a network device over backend and starts reading from it.
// The device owns backend: Close closes it.
func New(cfg Config, backend Backend) (*Device, error) {
	if backend == nil {
		return nil, fmt.Errorf("%w: no backend", ErrConfig)
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.QueueSize&(cfg.QueueSize-1) != 0 || cfg.QueueSize > virtio.MaxQueueSize {
		return nil, fmt.Errorf("%w: queue size %d", ErrConfig, cfg.QueueSize)
	}
	d := &Device{
		cfg: cfg, backend: backend,
		log:    slog.Default().With("device", "virtio-net", "backend", cfg.HostDevName),
		txBuf:  make([]byte, HdrSize+MaxFrame),
		rxWake: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	d.Runner = virtio.NewRunner(d.process)
	d.wg.Add(1)
	go d.receive()
	return d, nil
}

// State returns the device's state.
func (d *Device) State() State { return State{Config: d.cfg} }

// FromState rebuilds a saved device over a new backend (the VMM recreates
// the TAP from State.Config.HostDevName).
func FromState(st State, backend Backend) (*Device, error) { return New(st.Config, backend) }

// Stats returns the frame counters.
func (d *Device) Stats() Stats {
	return Stats{
		RXFrames: d.rxFrames.Load(), RXDropped: d.rxDropped.Load(),
		TXFrames: d.txFrames.Load(), TXDropped: d.txDropped.Load(),
	}
}

// Close stops the receive goroutine and closes the backend. The device
// must be reset or never activated.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		close(d.done)
		d.closeErr = d.backend.Close()
		d.wg.Wait()
	})
	return d.closeErr
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeNet }

// Features implements virtio.Device.
func (d *Device) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureRingIndirectDesc | virtio.FeatureRingEventIdx | FeatureMAC
}

// QueueMaxSizes implements virtio.Device: receive and transmit.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{d.cfg.QueueSize, d.cfg.QueueSize} }

// ReadConfig implements virtio.Device: struct virtio_net_config's mac.
func (d *Device) ReadConfig(off uint64, data []byte) {
	var cfg [configSize]byte
	copy(cfg[:], d.cfg.MAC[:])
	clear(data)
	if off < configSize {
		copy(data, cfg[off:])
	}
}

// WriteConfig implements virtio.Device; the MAC is not writable (no
// VIRTIO_NET_F_CTRL_MAC_ADDR).
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 2 {
		return fmt.Errorf("%w: %d queues", ErrConfig, len(a.Queues))
	}
	d.Start(a)
	d.wake()
	return nil
}

// Resume implements virtio.Device: it also lets a held frame go.
func (d *Device) Resume() {
	d.Runner.Resume()
	d.wake()
}

func (d *Device) wake() {
	select {
	case d.rxWake <- struct{}{}:
	default:
	}
}

// process handles a notification (under the runner's lock).
func (d *Device) process(a *virtio.Activation, i int) error {
	if i == RXQueue {
		d.wake() // new receive buffers
		return nil
	}
	return virtio.Process(a.Queues[TXQueue], a.Signal, d.transmit)
}
