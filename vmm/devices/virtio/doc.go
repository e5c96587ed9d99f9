// Package virtio holds the transport-independent parts of ember's virtio
// devices (virtio 1.x, split virtqueues): the Device interface a transport
// drives, the virtqueue (Queue) and its descriptor chains (Chain), and the
// constants of the specification.
//
// Everything read from guest memory is untrusted. A queue's rings are
// checked when the queue is built (size a power of two no larger than the
// device's maximum, aligned addresses, rings inside guest memory); every
// descriptor is checked when its chain is parsed (index below the table
// size, chain no longer than the queue, buffer inside guest memory without
// wrapping, no zero-length buffer, no device-readable buffer after a
// device-writable one, indirect tables only when negotiated, not nested, of
// a whole number of descriptors). A bad chain is handed back to the driver
// unused (length 0); a corrupt ring puts the device into DEVICE_NEEDS_RESET.
// Neither can make the host panic.
//
// The transport lives in subpackage mmio, the devices in block, net and
// rng, and a simulated guest driver for tests in virtiotest.
package virtio
