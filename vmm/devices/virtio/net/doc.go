// Package net is the virtio network device (virtio 1.x spec §5.1) with a
// TAP backend (internal/tap).
//
// Queue 0 receives, queue 1 transmits; there is no control queue and no
// offload: the device offers VIRTIO_NET_F_MAC (the guest's MAC in
// configuration space) besides the ring features, so every frame carries a
// 12-byte virtio_net_hdr_v1 with no checksum or segmentation work in it.
// The header a guest puts in front of a transmitted frame is replaced with
// an empty one before the frame reaches the TAP, so a guest cannot ask the
// host kernel for offload work it never negotiated.
//
// A goroutine reads frames from the backend and hands each to the receive
// queue. When the driver has posted no buffer (or the device is paused or
// not yet activated) it holds the frame and stops reading until the driver
// posts buffers: the backend's own queue absorbs, and then drops, what
// arrives meanwhile.
package net
