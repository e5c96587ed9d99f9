// Package mmio is the virtio-mmio transport (modern, version 2; virtio 1.x
// spec §4.2.2): a bus.Device that exposes a virtio.Device to the guest as a
// register window on the MMIO bus.
//
// The transport owns the registers, feature negotiation (the driver must
// accept VIRTIO_F_VERSION_1 and nothing the device did not offer, or
// FEATURES_OK is refused), the status state machine (writing 0 resets the
// device; DRIVER_OK validates the queues and activates the device, or sets
// DEVICE_NEEDS_RESET), the interrupt status and the queue configuration.
// Guest mistakes never fail an access: bad accesses are ignored (reads
// return zero) and logged at debug level.
//
// Queue notifications arrive as writes to QueueNotify (a VM exit) or,
// after AttachIOEventFDs, through one eventfd per queue that KVM signals
// without an exit.
package mmio
