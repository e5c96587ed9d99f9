// Package block is the virtio block device (virtio 1.x spec §5.2) backed by
// a raw image file, read-only or read-write.
//
// It serves VIRTIO_BLK_T_IN, OUT, FLUSH (fsync) and GET_ID; anything else
// gets VIRTIO_BLK_S_UNSUPP. Every request's sector range is checked against
// the capacity (without overflow), data lengths must be whole sectors, a
// read-only device refuses writes with VIRTIO_BLK_S_IOERR and writes
// nothing, and a request whose buffers have the wrong shape (a header that
// is not device-readable, no room for the status byte) is refused without
// touching the image.
//
// A spare drive (Config.Spare) is a slot whose backing file is set at run
// time (Device.Attach, Device.Detach): virtio-mmio has no hotplug, so a VM
// is built with empty slots (capacity 0) and the guest is told of a new
// backing file with a configuration-change interrupt, on which Linux's
// virtio_blk re-reads the capacity.
package block
