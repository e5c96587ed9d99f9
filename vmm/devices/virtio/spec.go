package virtio

// DeviceType is a virtio device ID (spec §5).
type DeviceType uint32

// Device IDs.
const (
	TypeNet     DeviceType = 1
	TypeBlock   DeviceType = 2
	TypeConsole DeviceType = 3
	TypeRNG     DeviceType = 4
	TypeVsock   DeviceType = 19
)

func (t DeviceType) String() string {
	switch t {
	case TypeNet:
		return "net"
	case TypeBlock:
		return "block"
	case TypeConsole:
		return "console"
	case TypeRNG:
		return "rng"
	case TypeVsock:
		return "vsock"
	}
	return "unknown"
}

// Device-independent feature bits (spec §6).
const (
	// FeatureRingIndirectDesc: the driver may use indirect descriptors.
	FeatureRingIndirectDesc uint64 = 1 << 28
	// FeatureRingEventIdx: used_event / avail_event notification suppression.
	FeatureRingEventIdx uint64 = 1 << 29
	// FeatureVersion1: virtio 1.x (non-legacy) device. Transports require it.
	FeatureVersion1 uint64 = 1 << 32
)

// Device status bits (spec §2.1).
const (
	StatusAcknowledge uint32 = 1
	StatusDriver      uint32 = 2
	StatusDriverOK    uint32 = 4
	StatusFeaturesOK  uint32 = 8
	StatusNeedsReset  uint32 = 64
	StatusFailed      uint32 = 128
)

// Interrupt status bits (spec §4.2.2, InterruptStatus).
const (
	// InterruptUsedBuffer: the device added buffers to a used ring.
	InterruptUsedBuffer uint32 = 1
	// InterruptConfigChange: the configuration (or DEVICE_NEEDS_RESET) changed.
	InterruptConfigChange uint32 = 2
)

// Descriptor flags (spec §2.7.5).
const (
	DescFlagNext     uint16 = 1
	DescFlagWrite    uint16 = 2
	DescFlagIndirect uint16 = 4
)

// Ring flags (spec §2.7.6, §2.7.8).
const (
	// AvailFlagNoInterrupt: the driver does not want interrupts.
	AvailFlagNoInterrupt uint16 = 1
	// UsedFlagNoNotify: the device does not want notifications.
	UsedFlagNoNotify uint16 = 1
)

// MaxQueueSize is the largest split-queue size the spec allows.
const MaxQueueSize = 32768

// DescriptorSize is the size of one descriptor table entry.
const DescriptorSize = 16

// Ring layout sizes for a queue of size n (spec §2.7): the descriptor table,
// the available ring (flags, idx, ring[n], used_event) and the used ring
// (flags, idx, ring[n]{id, len}, avail_event).
func descTableSize(n uint16) uint64 { return DescriptorSize * uint64(n) }
func availRingSize(n uint16) uint64 { return 6 + 2*uint64(n) }
func usedRingSize(n uint16) uint64  { return 6 + 8*uint64(n) }

// Ring alignment requirements (spec §2.7.1).
const (
	descAlign  = 16
	availAlign = 2
	usedAlign  = 4
)
