package mmio

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/embervm/ember/internal/eventfd"
	"github.com/embervm/ember/vmm/bus"
	"github.com/embervm/ember/vmm/devices"
	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/memory"
)

// Config is what a transport is built from.
type Config struct {
	// Device is the device model behind the transport.
	Device virtio.Device
	// Memory is guest memory, where the driver places the queues.
	Memory memory.Accessor
	// Interrupt raises the device's interrupt line (an irqfd in the VMM).
	Interrupt devices.Interrupt
	// Logger receives debug records about guest mistakes; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Transport is one virtio-mmio device window. It implements bus.Device;
// insert it on the MMIO bus at a Size-aligned base.
type Transport struct {
	dev      virtio.Device
	mem      memory.Accessor
	irq      devices.Interrupt
	log      *slog.Logger
	features uint64   // the device's offer
	maxSizes []uint16 // per queue

	mu          sync.Mutex
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	queueSel    uint32
	status      uint32
	queues      []virtio.QueueState // the driver's configuration
	live        []*virtio.Queue     // after activation; owned by the device
	paused      bool
	notifiers   []*eventfd.EventFD
	readers     sync.WaitGroup

	// Touched without mu: by the device (through signaller) and by
	// notification paths.
	active     atomic.Bool
	intStatus  atomic.Uint32
	needsReset atomic.Bool
	// configGen is ConfigGeneration: bumped by every configuration change
	// the device signals, so a driver that read the configuration across a
	// change (a 64-bit capacity read as two 32-bit halves) reads it again.
	configGen atomic.Uint32
}

var _ bus.Device = (*Transport)(nil)

// New builds a transport for cfg.Device, in the reset state.
func New(cfg Config) (*Transport, error) {
	if cfg.Device == nil || cfg.Memory == nil || cfg.Interrupt == nil {
		return nil, fmt.Errorf("%w: device, memory and interrupt are required", ErrBadDevice)
	}
	f := cfg.Device.Features()
	if f&virtio.FeatureVersion1 == 0 {
		return nil, fmt.Errorf("%w: %s device does not offer VIRTIO_F_VERSION_1", ErrBadDevice, cfg.Device.Type())
	}
	sizes := append([]uint16(nil), cfg.Device.QueueMaxSizes()...)
	if len(sizes) == 0 {
		return nil, fmt.Errorf("%w: %s device has no queues", ErrBadDevice, cfg.Device.Type())
	}
	for i, s := range sizes {
		if s == 0 || s > virtio.MaxQueueSize || s&(s-1) != 0 {
			return nil, fmt.Errorf("%w: queue %d maximum size %d", ErrBadDevice, i, s)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	t := &Transport{
		dev: cfg.Device, mem: cfg.Memory, irq: cfg.Interrupt,
		log:      log.With("device", "virtio-mmio", "type", cfg.Device.Type().String()),
		features: f, maxSizes: sizes,
	}
	t.resetLocked()
	return t, nil
}

// Device returns the device model behind the transport.
func (t *Transport) Device() virtio.Device { return t.dev }

// resetLocked puts every register back to its reset value. The caller has
// stopped the device.
func (t *Transport) resetLocked() {
	t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel, t.status = 0, 0, 0, 0, 0
	t.queues = make([]virtio.QueueState, len(t.maxSizes))
	for i, m := range t.maxSizes {
		t.queues[i] = virtio.QueueState{MaxSize: m, Size: m}
	}
	t.live = nil
	t.active.Store(false)
	t.intStatus.Store(0)
	t.needsReset.Store(false)
}

// Read implements bus.Device.
func (t *Transport) Read(offset uint64, data []byte) error {
	if offset >= ConfigSpace {
		t.dev.ReadConfig(offset-ConfigSpace, data)
		return nil
	}
	clear(data)
	if len(data) != 4 || offset%4 != 0 {
		t.log.Debug("ignoring misaligned or non-32-bit register read", "offset", offset, "len", len(data))
		return nil
	}
	binary.LittleEndian.PutUint32(data, t.readReg(offset))
	return nil
}

func (t *Transport) readReg(offset uint64) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegMagicValue:
		return MagicValue
	case RegVersion:
		return Version
	case RegDeviceID:
		return uint32(t.dev.Type())
	case RegVendorID:
		return VendorID
	case RegDeviceFeatures:
		switch t.devFeatSel {
		case 0:
			return uint32(t.features)
		case 1:
			return uint32(t.features >> 32)
		}
		return 0
	case RegQueueNumMax:
		if q := t.selected(); q != nil {
			return uint32(q.MaxSize)
		}
		return 0
	case RegQueueReady:
		if q := t.selected(); q != nil && q.Ready {
			return 1
		}
		return 0
	case RegInterruptStatus:
		return t.intStatus.Load()
	case RegStatus:
		return t.statusLocked()
	case RegConfigGeneration:
		return t.configGen.Load()
	}
	t.log.Debug("ignoring read of write-only or unknown register", "offset", offset)
	return 0
}

func (t *Transport) statusLocked() uint32 {
	if t.needsReset.Load() {
		return t.status | virtio.StatusNeedsReset
	}
	return t.status
}

// selected returns the configuration of the queue QueueSel names, nil if
// none. After activation the live queue belongs to the device; the
// configuration (size, ready, addresses) stays here unchanged.
func (t *Transport) selected() *virtio.QueueState {
	if uint64(t.queueSel) >= uint64(len(t.queues)) {
		return nil
	}
	return &t.queues[t.queueSel]
}

// Write implements bus.Device.
func (t *Transport) Write(offset uint64, data []byte) error {
	if offset >= ConfigSpace {
		t.mu.Lock()
		ok := t.status&virtio.StatusDriver != 0
		t.mu.Unlock()
		if ok {
			t.dev.WriteConfig(offset-ConfigSpace, data)
		}
		return nil
	}
	if len(data) != 4 || offset%4 != 0 {
		t.log.Debug("ignoring misaligned or non-32-bit register write", "offset", offset, "len", len(data))
		return nil
	}
	v := binary.LittleEndian.Uint32(data)
	if offset == RegQueueNotify {
		t.notify(v)
		return nil
	}
	if offset == RegInterruptACK {
		t.intStatus.And(^v)
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegDeviceFeaturesSel:
		t.devFeatSel = v
	case RegDriverFeaturesSel:
		t.drvFeatSel = v
	case RegDriverFeatures:
		t.writeDriverFeatures(v)
	case RegQueueSel:
		t.queueSel = v
	case RegStatus:
		t.writeStatus(v)
	case RegQueueNum, RegQueueReady, RegQueueDescLow, RegQueueDescHigh,
		RegQueueDriverLow, RegQueueDriverHigh, RegQueueDeviceLow, RegQueueDeviceHigh:
		t.writeQueue(offset, v)
	default:
		t.log.Debug("ignoring write to read-only or unknown register", "offset", offset, "value", v)
	}
	return nil
}

// writeDriverFeatures takes half of the driver's acknowledged features;
// only between DRIVER and FEATURES_OK.
func (t *Transport) writeDriverFeatures(v uint32) {
	if t.status&virtio.StatusDriver == 0 || t.status&virtio.StatusFeaturesOK != 0 {
		t.log.Debug("ignoring DriverFeatures outside feature negotiation", "status", t.status)
		return
	}
	switch t.drvFeatSel {
	case 0:
		t.drvFeatures = t.drvFeatures&^0xffffffff | uint64(v)
	case 1:
		t.drvFeatures = t.drvFeatures&0xffffffff | uint64(v)<<32
	default:
		if v != 0 {
			t.log.Debug("ignoring driver features beyond bit 63", "sel", t.drvFeatSel, "value", v)
		}
	}
}

// writeQueue sets up the selected queue; only after FEATURES_OK and before
// DRIVER_OK (spec §3.1.1).
func (t *Transport) writeQueue(offset uint64, v uint32) {
	if t.status&virtio.StatusFeaturesOK == 0 || t.status&virtio.StatusDriverOK != 0 {
		t.log.Debug("ignoring queue setup outside FEATURES_OK..DRIVER_OK", "offset", offset, "status", t.status)
		return
	}
	q := t.selected()
	if q == nil {
		t.log.Debug("ignoring setup of a queue that does not exist", "queue", t.queueSel)
		return
	}
	lo := func(a *uint64) { *a = *a&^0xffffffff | uint64(v) }
	hi := func(a *uint64) { *a = *a&0xffffffff | uint64(v)<<32 }
	switch offset {
	case RegQueueNum:
		// Checked (power of two, at most QueueNumMax) at DRIVER_OK.
		q.Size = uint16(min(v, 0xffff))
		if v > 0xffff {
			q.Size = 0
		}
	case RegQueueReady:
		q.Ready = v&1 != 0
	case RegQueueDescLow:
		lo(&q.DescTable)
	case RegQueueDescHigh:
		hi(&q.DescTable)
	case RegQueueDriverLow:
		lo(&q.AvailRing)
	case RegQueueDriverHigh:
		hi(&q.AvailRing)
	case RegQueueDeviceLow:
		lo(&q.UsedRing)
	case RegQueueDeviceHigh:
		hi(&q.UsedRing)
	}
}

// writeStatus runs the status state machine (spec §3.1.1, §2.1.2).
func (t *Transport) writeStatus(v uint32) {
	if v == 0 {
		t.reset()
		return
	}
	if v&t.status != t.status {
		t.log.Debug("ignoring status write that clears bits without reset", "status", t.status, "value", v)
		return
	}
	v &^= virtio.StatusNeedsReset // the device's bit, not the driver's
	added := v &^ t.status
	if added&virtio.StatusFeaturesOK != 0 {
		if err := t.checkFeatures(); err != nil {
			t.log.Debug("refusing FEATURES_OK", "err", err)
			v &^= virtio.StatusFeaturesOK
		}
	}
	if added&virtio.StatusDriverOK != 0 && v&virtio.StatusFeaturesOK == 0 {
		t.log.Debug("ignoring DRIVER_OK before FEATURES_OK", "status", t.status)
		v &^= virtio.StatusDriverOK
	}
	t.status = v
	if v&virtio.StatusDriverOK != 0 && added&virtio.StatusDriverOK != 0 {
		if err := t.activateLocked(); err != nil {
			t.log.Warn("virtio device not activated; needs reset", "err", err)
			t.setNeedsReset()
		}
	}
}

// checkFeatures decides whether the driver's acknowledged features can be
// accepted.
func (t *Transport) checkFeatures() error {
	if t.status&virtio.StatusDriver == 0 {
		return fmt.Errorf("FEATURES_OK without DRIVER")
	}
	if t.drvFeatures&virtio.FeatureVersion1 == 0 {
		return fmt.Errorf("driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)")
	}
	if extra := t.drvFeatures &^ t.features; extra != 0 {
		return fmt.Errorf("driver accepted features %#x the device does not offer", extra)
	}
	return nil
}

// activateLocked validates the driver's queues and starts the device.
func (t *Transport) activateLocked() error {
	live := make([]*virtio.Queue, len(t.queues))
	for i, qs := range t.queues {
		qs.EventIdx = t.drvFeatures&virtio.FeatureRingEventIdx != 0
		qs.Indirect = t.drvFeatures&virtio.FeatureRingIndirectDesc != 0
		qs.NextAvail, qs.NextUsed = 0, 0
		q, err := virtio.NewQueue(t.mem, qs)
		if err != nil {
			return fmt.Errorf("queue %d: %w", i, err)
		}
		live[i] = q
	}
	return t.startLocked(live)
}

// startLocked hands live queues to the device.
func (t *Transport) startLocked(live []*virtio.Queue) error {
	err := t.dev.Activate(virtio.Activation{
		Mem: t.mem, Features: t.drvFeatures, Queues: live, Signal: signaller{t},
	})
	if err != nil {
		return fmt.Errorf("activate: %w", err)
	}
	t.live = live
	t.active.Store(true)
	return nil
}

// reset stops the device and returns every register to its reset value.
func (t *Transport) reset() {
	if t.active.Load() {
		t.dev.Reset()
	}
	t.resetLocked()
}

// notify passes a queue notification to an active device.
func (t *Transport) notify(q uint32) {
	if !t.active.Load() {
		t.log.Debug("ignoring notification of an inactive device", "queue", q)
		return
	}
	if uint64(q) >= uint64(len(t.maxSizes)) {
		t.log.Debug("ignoring notification of a queue that does not exist", "queue", q)
		return
	}
	t.dev.Notify(int(q))
}

func (t *Transport) setNeedsReset() {
	t.needsReset.Store(true)
	t.intStatus.Or(virtio.InterruptConfigChange)
	if err := t.irq.Trigger(); err != nil {
		t.log.Warn("raising interrupt", "err", err)
	}
}

// signaller is the virtio.Signaller a device gets; it takes no lock.
type signaller struct{ t *Transport }

func (s signaller) UsedBuffer() error {
	s.t.intStatus.Or(virtio.InterruptUsedBuffer)
	return s.t.irq.Trigger()
}

func (s signaller) ConfigChanged() error {
	s.t.configGen.Add(1)
	s.t.intStatus.Or(virtio.InterruptConfigChange)
	return s.t.irq.Trigger()
}

func (s signaller) NeedsReset(cause error) {
	s.t.log.Warn("virtio device needs reset", "err", cause)
	s.t.setNeedsReset()
}

// Status returns the device status register (for diagnostics and tests).
func (t *Transport) Status() uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.statusLocked()
}

// Active reports whether the device is activated.
func (t *Transport) Active() bool { return t.active.Load() }

// Close stops the device, stops reading the ioeventfds and closes them.
// The VMM unregisters the ioeventfds from KVM (or closes the VM) itself.
// It does not close the device's own resources.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.reset()
	fds := t.notifiers
	t.notifiers = nil
	t.mu.Unlock()
	var first error
	for _, e := range fds {
		if err := e.Close(); err != nil && first == nil {
			first = err
		}
	}
	t.readers.Wait()
	return first
}
