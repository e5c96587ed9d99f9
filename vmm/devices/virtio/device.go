package virtio

import "github.com/embervm/ember/vmm/memory"

// Device is a virtio device model as a transport (virtio-mmio) drives it.
// The transport owns the registers, the status state machine and feature
// negotiation; the device owns its queues from Activate until Reset.
//
// Activate, Notify, Reset, Pause and Resume may be called from different
// goroutines (vCPU threads, ioeventfd readers); the device serializes them.
type Device interface {
	// Type is the virtio device ID.
	Type() DeviceType
	// Features returns the feature bits the device offers. It must include
	// FeatureVersion1.
	Features() uint64
	// QueueMaxSizes returns, per queue, the largest size the device
	// accepts; its length is the number of queues.
	QueueMaxSizes() []uint16
	// ReadConfig fills data from device configuration space at offset;
	// bytes beyond the configuration read as zero.
	ReadConfig(offset uint64, data []byte)
	// WriteConfig writes device configuration space; read-only fields
	// ignore writes.
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device once the driver set DRIVER_OK. The queues
	// are validated and live; a device that cannot start returns an error
	// and the transport sets DEVICE_NEEDS_RESET.
	Activate(a Activation) error
	// Notify tells the device that the driver made buffers available in
	// queue i (a QueueNotify write or its ioeventfd). Ignored before
	// Activate and while paused (the device remembers it and drains on
	// Resume).
	Notify(i int)
	// Reset stops the device: when it returns the device no longer touches
	// guest memory or the queues, until the next Activate.
	Reset()
	// Pause stops processing (for a snapshot): when it returns the device
	// no longer touches guest memory or the queues until Resume.
	Pause()
	// Resume undoes Pause and processes what arrived meanwhile.
	Resume()
}

// Activation is what a device gets when the driver has finished setup.
type Activation struct {
	// Mem is guest memory.
	Mem memory.Accessor
	// Features are the negotiated features (driver's acknowledgement,
	// a subset of the device's offer).
	Features uint64
	// Queues are the device's queues, in order, built from the driver's
	// configuration (or a snapshot).
	Queues []*Queue
	// Signal raises the transport's interrupts.
	Signal Signaller
}

// Signaller is how a device tells its driver things through the transport.
// Its methods do not block on the transport's register lock, so a device
// may call them with its own lock held.
type Signaller interface {
	// UsedBuffer raises the used-buffer interrupt.
	UsedBuffer() error
	// ConfigChanged raises the configuration-change interrupt.
	ConfigChanged() error
	// NeedsReset sets DEVICE_NEEDS_RESET (the device met a driver error it
	// cannot recover from, such as a corrupt ring) and raises the
	// configuration-change interrupt. cause is logged.
	NeedsReset(cause error)
}

// Process drains q with the disable-notify / drain / re-enable loop: it
// hands every available chain to handle, returns each to the driver with
// the length handle reports, and repeats until the ring stays empty with
// notifications enabled. It then raises the used-buffer interrupt if the
// driver wants one. A corrupt ring ends the drain: Process calls
// sig.NeedsReset and returns the error, and the caller should stop using q.
// A failure to raise the interrupt is returned too.
func Process(q *Queue, sig Signaller, handle func(*Chain) uint32) error {
	err := drain(q, handle)
	if err != nil {
		sig.NeedsReset(err)
	}
	if q.NeedsNotification() {
		if ierr := sig.UsedBuffer(); ierr != nil && err == nil {
			err = ierr
		}
	}
	return err
}

func drain(q *Queue, handle func(*Chain) uint32) error {
	for {
		q.DisableNotification()
		for {
			c, err := q.Pop()
			if err != nil {
				return err
			}
			if c == nil {
				break
			}
			if err := q.AddUsed(c.Head, handle(c)); err != nil {
				return err
			}
		}
		more, err := q.EnableNotification()
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}
