// Package vsock is ember's virtio-vsock device (virtio 1.2 §5.10): stream
// sockets between the guest and the host, with the host side on Unix
// sockets in the style of Firecracker.
//
// # Host side
//
// The device listens on a Unix socket path U (Config.UDSPath).
//
//   - Host-initiated: a client connects to U and writes "CONNECT <port>\n".
//     The device sends a REQUEST to the guest's <port>. When the guest
//     answers RESPONSE the device writes "OK <hostport>\n" (the host-side
//     port it chose) to the client, and from then on the socket carries the
//     stream, byte for byte. If the guest answers RST, or does not answer in
//     Config.ConnectTimeout, the client is closed without "OK".
//   - Guest-initiated: a guest connect to host CID 2, port P is forwarded
//     to the Unix socket "U_P" (U, an underscore, P in decimal). If nothing
//     accepts there the guest gets RST.
//
// End of stream travels both ways as a half-close: EOF from a host client
// becomes SHUTDOWN(SEND) to the guest, and a guest SHUTDOWN(SEND) becomes
// CloseWrite on the host socket once every byte is written. When both
// directions are finished (or the guest shuts down both at once) the device
// resets the connection, as the guest's close expects.
//
// # Flow control
//
// Each connection has a receive buffer of Config.BufAlloc bytes, advertised
// to the guest in every packet (buf_alloc, fwd_cnt); a guest that sends more
// than that has its connection reset. Bytes from a host socket are read only
// while the guest's advertised credit allows, at most one chunk at a time,
// and held until the guest gives receive buffers: nothing is dropped and a
// slow guest stops the host reads instead. The device sends CREDIT_UPDATE
// when the guest's view of its free space falls below half, and
// CREDIT_REQUEST when the guest's credit runs out.
//
// # Threading
//
// One event-loop goroutine owns all connection state and the queues. Queue
// notifications, host I/O completions and the transport's calls reach it
// over channels; each established connection has one goroutine reading its
// host socket (only when granted credit) and one writing it. Close stops and
// waits for all of them and closes every descriptor.
//
// # Snapshots
//
// Connections are not saved (their host sockets cannot be). The device's
// State is its guest CID; the transport (mmio.State) saves the queues.
// A device built with Restore sends VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on
// the event queue when the restored transport activates it, so the guest
// drops its stale connections, re-reads the CID and can connect anew.
//
// Every header, length and port the guest supplies is checked; a malformed
// packet resets at most the connection it names.
package vsock
