// Package virtiotest plays the guest driver for virtio device tests: it lays
// out split virtqueues in guest memory, builds descriptor chains (direct,
// indirect or deliberately broken), publishes them, kicks the device
// through the virtio-mmio registers and reads the used ring back. It also
// provides an interrupt recorder.
package virtiotest
