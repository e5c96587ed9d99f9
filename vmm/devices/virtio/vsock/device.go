package vsock

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// Queue indexes (spec §5.10.2).
const (
	rxQueue    = 0
	txQueue    = 1
	eventQueue = 2
	numQueues  = 3
)

// QueueSize is the maximum size of each queue.
const QueueSize = 256

// Defaults for Config.
const (
	// DefaultBufAlloc is each connection's receive buffer.
	DefaultBufAlloc = 256 << 10
	// DefaultConnectTimeout bounds a host client's handshake and the wait
	// for the guest's answer to its REQUEST.
	DefaultConnectTimeout = 2 * time.Second
	// maxBufAlloc bounds Config.BufAlloc.
	maxBufAlloc = 16 << 20
	// DefaultMaxConns bounds the connections (host- and guest-initiated).
	DefaultMaxConns = 1024
)

// Config is what a device is built from.
type Config struct {
	// GuestCID is the guest's address, 3 to 2^32-2.
	GuestCID uint64
	// UDSPath is the Unix socket path the device listens on for
	// host-initiated connections; guest-initiated connections to port P
	// go to UDSPath_P.
	UDSPath string
	// BufAlloc is each connection's receive buffer, advertised to the
	// guest; 0 means DefaultBufAlloc.
	BufAlloc uint32
	// ConnectTimeout bounds a host client's "CONNECT" line, the guest's
	// answer to a REQUEST and the dial of a U_P socket; 0 means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxConns bounds the open connections; 0 means DefaultMaxConns.
	MaxConns int
	// Logger receives records about guest mistakes and host errors; nil
	// means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.GuestCID <= HostCID || c.GuestCID > maxGuestCID {
		return fmt.Errorf("%w: guest CID %d (must be 3..%d)", ErrConfig, c.GuestCID, maxGuestCID)
	}
	if c.UDSPath == "" {
		return fmt.Errorf("%w: no Unix socket path", ErrConfig)
	}
	if c.BufAlloc == 0 {
		c.BufAlloc = DefaultBufAlloc
	}
	if c.BufAlloc > maxBufAlloc {
		return fmt.Errorf("%w: buffer of %d bytes (at most %d)", ErrConfig, c.BufAlloc, maxBufAlloc)
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Device is a virtio-vsock device. It implements virtio.Device; put it
// behind a transport (mmio.New) and Close it after the transport.
type Device struct {
	cfg Config
	log *slog.Logger
	ln  *net.UnixListener

	// Channels into the loop.
	kick   chan struct{} // queue notifications (coalesced)
	calls  chan call     // the transport's synchronous calls
	events chan any      // host I/O, handshakes, dials, timeouts

	ctx       context.Context // canceled by Close
	cancel    context.CancelFunc
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // every goroutine the device started

	hsMu       sync.Mutex
	handshakes map[*net.UnixConn]struct{} // clients still sending CONNECT
}

var _ virtio.Device = (*Device)(nil)

// call is a function the loop runs on its state, with done closed after.
type call struct {
	f    func(m *muxer)
	done chan struct{}
}

// New creates a device, listens on cfg.UDSPath and starts its loop. A
// stale socket file at the path (nobody accepting) is replaced; a live one
// is ErrAddrInUse.
func New(cfg Config) (*Device, error) { return newDevice(cfg, false) }

// newDevice is New; resetOnActivate makes the first activation send
// TRANSPORT_RESET (a restored device).
func newDevice(cfg Config, resetOnActivate bool) (*Device, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ln, err := listen(cfg.UDSPath)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Device{
		cfg:        cfg,
		log:        cfg.Logger.With("device", "virtio-vsock", "cid", cfg.GuestCID),
		ln:         ln,
		kick:       make(chan struct{}, 1),
		calls:      make(chan call),
		events:     make(chan any, 64),
		ctx:        ctx,
		cancel:     cancel,
		done:       make(chan struct{}),
		handshakes: map[*net.UnixConn]struct{}{},
	}
	m := newMuxer(d, resetOnActivate)
	d.wg.Add(2)
	go func() { defer d.wg.Done(); m.run() }()
	go func() { defer d.wg.Done(); d.acceptLoop() }()
	return d, nil
}

// CID returns the guest's CID.
func (d *Device) CID() uint64 { return d.cfg.GuestCID }

// UDSPath returns the Unix socket path host clients connect to.
func (d *Device) UDSPath() string { return d.cfg.UDSPath }

// Close stops the device: it closes the listener (removing its socket
// file), every host connection and every goroutine, and waits for them.
// The guest's connections are gone; close the transport first so that the
// guest no longer reaches the device.
func (d *Device) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.cancel()
		close(d.done)
		err = d.ln.Close()
		d.hsMu.Lock()
		for c := range d.handshakes {
			c.Close()
		}
		d.hsMu.Unlock()
		d.wg.Wait()
		// Nobody posts any more; close what was posted but not taken.
		for {
			select {
			case ev := <-d.events:
				switch ev := ev.(type) {
				case hostConnect:
					ev.host.Close()
				case dialed:
					if ev.host != nil {
						ev.host.Close()
					}
				}
				continue
			default:
			}
			break
		}
	})
	return err
}

// post hands an event to the loop; it reports false if the device is
// closing (the event is dropped).
func (d *Device) post(ev any) bool {
	select {
	case d.events <- ev:
		return true
	case <-d.done:
		return false
	}
}

// do runs f in the loop and waits for it. It reports false if the device
// is closed.
func (d *Device) do(f func(m *muxer)) bool {
	c := call{f: f, done: make(chan struct{})}
	select {
	case d.calls <- c:
	case <-d.done:
		return false
	}
	select {
	case <-c.done:
		return true
	case <-d.done:
		return false
	}
}

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeVsock }

// Features implements virtio.Device. Stream sockets need no feature bit
// (spec §5.10.3: without VIRTIO_VSOCK_F_NO_IMPLIED_STREAM, stream is
// implied).
func (d *Device) Features() uint64 {
	return virtio.FeatureVersion1 | virtio.FeatureRingEventIdx | virtio.FeatureRingIndirectDesc
}

// QueueMaxSizes implements virtio.Device: rx, tx and event.
func (d *Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize, QueueSize} }

// ReadConfig implements virtio.Device: the configuration is guest_cid, a
// little-endian u64.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	var cfg [8]byte
	binary.LittleEndian.PutUint64(cfg[:], d.cfg.GuestCID)
	if offset < uint64(len(cfg)) {
		copy(data, cfg[offset:])
	}
}

// WriteConfig implements virtio.Device; the configuration is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {
	d.log.Debug("ignoring write to read-only configuration", "offset", offset, "len", len(data))
}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != numQueues {
		return fmt.Errorf("%w: %d, want %d", ErrQueues, len(a.Queues), numQueues)
	}
	if !d.do(func(m *muxer) { m.activate(a) }) {
		return ErrClosed
	}
	return nil
}

// Notify implements virtio.Device. It does not wait: the loop drains the
// queues soon after.
func (d *Device) Notify(int) {
	select {
	case d.kick <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Reset implements virtio.Device: every connection is closed.
func (d *Device) Reset() { d.do(func(m *muxer) { m.reset() }) }

// Pause implements virtio.Device. Host sockets are still read (within the
// guest's credit) while paused; nothing reaches guest memory.
func (d *Device) Pause() { d.do(func(m *muxer) { m.paused = true }) }

// Resume implements virtio.Device.
func (d *Device) Resume() { d.do(func(m *muxer) { m.paused = false }) }
