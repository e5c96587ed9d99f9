package virtiotest

import (
	"encoding/binary"
	"testing"

	"github.com/embervm/ember/vmm/bus"
	"github.com/embervm/ember/vmm/devices/virtio"
	"github.com/embervm/ember/vmm/devices/virtio/mmio"
)

// MMIO drives a virtio-mmio register window as a guest driver does.
type MMIO struct {
	T   testing.TB
	Dev bus.Device
}

// Read32 reads a register.
func (m MMIO) Read32(off uint64) uint32 {
	m.T.Helper()
	var b [4]byte
	if err := m.Dev.Read(off, b[:]); err != nil {
		m.T.Fatalf("virtiotest: read %#x: %v", off, err)
	}
	return binary.LittleEndian.Uint32(b[:])
}

// Write32 writes a register.
func (m MMIO) Write32(off uint64, v uint32) {
	m.T.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	if err := m.Dev.Write(off, b[:]); err != nil {
		m.T.Fatalf("virtiotest: write %#x: %v", off, err)
	}
}

// DeviceFeatures reads the device's 64 feature bits.
func (m MMIO) DeviceFeatures() uint64 {
	m.T.Helper()
	m.Write32(mmio.RegDeviceFeaturesSel, 0)
	lo := m.Read32(mmio.RegDeviceFeatures)
	m.Write32(mmio.RegDeviceFeaturesSel, 1)
	hi := m.Read32(mmio.RegDeviceFeatures)
	return uint64(hi)<<32 | uint64(lo)
}

// Negotiate resets the device and runs the driver's part of
// initialization up to FEATURES_OK (spec §3.1.1), acknowledging
// want & the device's features. It returns the status read back, which
// lacks FEATURES_OK if the device refused.
func (m MMIO) Negotiate(want uint64) uint32 {
	m.T.Helper()
	m.Write32(mmio.RegStatus, 0)
	m.Write32(mmio.RegStatus, virtio.StatusAcknowledge)
	m.Write32(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	f := m.DeviceFeatures() & want
	m.Write32(mmio.RegDriverFeaturesSel, 0)
	m.Write32(mmio.RegDriverFeatures, uint32(f))
	m.Write32(mmio.RegDriverFeaturesSel, 1)
	m.Write32(mmio.RegDriverFeatures, uint32(f>>32))
	m.Write32(mmio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	return m.Read32(mmio.RegStatus)
}

// SetupQueue configures queue i with q's rings and marks it ready.
func (m MMIO) SetupQueue(i uint32, q *Queue) {
	m.T.Helper()
	m.Write32(mmio.RegQueueSel, i)
	m.Write32(mmio.RegQueueNum, uint32(q.Size))
	m.Write32(mmio.RegQueueDescLow, uint32(q.Desc))
	m.Write32(mmio.RegQueueDescHigh, uint32(q.Desc>>32))
	m.Write32(mmio.RegQueueDriverLow, uint32(q.Avail))
	m.Write32(mmio.RegQueueDriverHigh, uint32(q.Avail>>32))
	m.Write32(mmio.RegQueueDeviceLow, uint32(q.Used))
	m.Write32(mmio.RegQueueDeviceHigh, uint32(q.Used>>32))
	m.Write32(mmio.RegQueueReady, 1)
}

// Init negotiates want, sets up the queues (queue i on queues[i]) and sets
// DRIVER_OK. It fails the test unless the device ends up running.
func (m MMIO) Init(want uint64, queues ...*Queue) {
	m.T.Helper()
	st := m.Negotiate(want)
	if st&virtio.StatusFeaturesOK == 0 {
		m.T.Fatalf("virtiotest: device refused features %#x (status %#x)", want, st)
	}
	for i, q := range queues {
		m.SetupQueue(uint32(i), q)
	}
	m.Write32(mmio.RegStatus, st|virtio.StatusDriverOK)
	if st := m.Read32(mmio.RegStatus); st&virtio.StatusNeedsReset != 0 || st&virtio.StatusDriverOK == 0 {
		m.T.Fatalf("virtiotest: device not running after DRIVER_OK (status %#x)", st)
	}
}

// Kick notifies queue i through QueueNotify.
func (m MMIO) Kick(i uint32) { m.T.Helper(); m.Write32(mmio.RegQueueNotify, i) }

// AckInterrupt reads InterruptStatus, acknowledges it and returns it.
func (m MMIO) AckInterrupt() uint32 {
	m.T.Helper()
	v := m.Read32(mmio.RegInterruptStatus)
	m.Write32(mmio.RegInterruptACK, v)
	return v
}
