package mmio

// Register offsets of the virtio-mmio transport, version 2 (virtio 1.x spec
// §4.2.2). Registers are 32 bits wide and little-endian; the device
// configuration space starts at ConfigSpace.
const (
	RegMagicValue        = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegConfigGeneration  = 0x0fc
	ConfigSpace          = 0x100
)

const (
	// MagicValue is "virt" in little-endian.
	MagicValue = 0x74726976
	// Version is the modern (non-legacy) virtio-mmio version.
	Version = 2
	// VendorID is the vendor ember reports ("EMBR" is not registered; the
	// value only needs to be stable).
	VendorID = 0x524d4245
	// Size is the MMIO window one device takes: registers, configuration
	// space and room to spare. Devices are placed Size apart.
	Size = 0x1000
)
