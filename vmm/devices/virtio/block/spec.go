package block

// Feature bits (spec §5.2.3).
const (
	// FeatureRO: the device is read-only.
	FeatureRO uint64 = 1 << 5
	// FeatureFlush: the device handles VIRTIO_BLK_T_FLUSH.
	FeatureFlush uint64 = 1 << 9
)

// Request types (spec §5.2.6).
const (
	TypeIn    = 0
	TypeOut   = 1
	TypeFlush = 4
	TypeGetID = 8
)

// Request status values.
const (
	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

const (
	// SectorSize is the unit of sector numbers and capacity.
	SectorSize = 512
	// IDBytes is the length of the GET_ID answer.
	IDBytes = 20
	// headerSize is struct virtio_blk_req's header: type, reserved, sector.
	headerSize = 16
	// configSize is the part of struct virtio_blk_config the device fills
	// (capacity); the rest reads as zero.
	configSize = 60
	// DefaultQueueSize is the request queue's maximum size.
	DefaultQueueSize = 256
)
