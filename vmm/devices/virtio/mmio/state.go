package mmio

import (
	"fmt"

	"github.com/embervm/ember/vmm/devices/virtio"
)

// State is a transport's registers and queues as plain data, for
// snapshots. The device model saves its own state separately.
type State struct {
	DeviceFeaturesSel uint32
	DriverFeaturesSel uint32
	// DriverFeatures are the features the driver acknowledged.
	DriverFeatures   uint64
	QueueSel         uint32
	Status           uint32
	NeedsReset       bool
	InterruptStatus  uint32
	ConfigGeneration uint32
	// Queues hold each queue's configuration and, once the device is
	// active, its position in the rings.
	Queues []virtio.QueueState
}

// Pause stops the device from processing queues (and the ioeventfd
// readers from reaching it) until Resume; State requires it.
func (t *Transport) Pause() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused {
		t.paused = true
		t.dev.Pause()
	}
}

// Resume undoes Pause; the device drains what arrived while paused.
func (t *Transport) Resume() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.paused {
		t.paused = false
		t.dev.Resume()
	}
}

// State returns the transport's state. The transport must be paused, so
// that the queues' positions match guest memory.
func (t *Transport) State() (State, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.paused {
		return State{}, ErrNotPaused
	}
	st := State{
		DeviceFeaturesSel: t.devFeatSel,
		DriverFeaturesSel: t.drvFeatSel,
		DriverFeatures:    t.drvFeatures,
		QueueSel:          t.queueSel,
		Status:            t.status,
		NeedsReset:        t.needsReset.Load(),
		InterruptStatus:   t.intStatus.Load(),
		ConfigGeneration:  t.configGen.Load(),
		Queues:            append([]virtio.QueueState(nil), t.queues...),
	}
	for i, q := range t.live {
		st.Queues[i] = q.State()
	}
	return st, nil
}

// Restore builds a transport from a saved state. Guest memory must already
// hold the snapshot's contents: an active device is activated again with
// queues rebuilt from st, and drains anything the driver queued before the
// snapshot. The transport comes back running (not paused); an interrupt
// that was pending is raised again.
func Restore(cfg Config, st State) (*Transport, error) {
	t, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if len(st.Queues) != len(t.maxSizes) {
		return nil, fmt.Errorf("%w: %d queues saved, %s device has %d", ErrBadState, len(st.Queues), t.dev.Type(), len(t.maxSizes))
	}
	for i, q := range st.Queues {
		if q.MaxSize != t.maxSizes[i] {
			return nil, fmt.Errorf("%w: queue %d maximum size %d saved, device has %d", ErrBadState, i, q.MaxSize, t.maxSizes[i])
		}
	}
	if extra := st.DriverFeatures &^ t.features; extra != 0 {
		return nil, fmt.Errorf("%w: negotiated features %#x not offered by the device", ErrBadState, extra)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.devFeatSel, t.drvFeatSel, t.drvFeatures = st.DeviceFeaturesSel, st.DriverFeaturesSel, st.DriverFeatures
	t.queueSel, t.status = st.QueueSel, st.Status&^virtio.StatusNeedsReset
	t.configGen.Store(st.ConfigGeneration)
	copy(t.queues, st.Queues)
	t.needsReset.Store(st.NeedsReset)
	t.intStatus.Store(st.InterruptStatus)
	if t.status&virtio.StatusDriverOK != 0 && !st.NeedsReset {
		live := make([]*virtio.Queue, len(st.Queues))
		for i, qs := range st.Queues {
			q, err := virtio.NewQueue(t.mem, qs)
			if err != nil {
				return nil, fmt.Errorf("%w: queue %d: %w", ErrBadState, i, err)
			}
			live[i] = q
		}
		if err := t.startLocked(live); err != nil {
			return nil, err
		}
		for i := range live {
			t.dev.Notify(i)
		}
	}
	if st.InterruptStatus != 0 {
		if err := t.irq.Trigger(); err != nil {
			return nil, fmt.Errorf("raising restored interrupt: %w", err)
		}
	}
	return t, nil
}
