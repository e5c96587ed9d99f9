package vsock

import "errors"

// Sentinel errors.
var (
	// ErrConfig: a Config the device cannot use (reserved CID, no path).
	ErrConfig = errors.New("vsock: bad configuration")
	// ErrAddrInUse: another process listens on the Unix socket path.
	ErrAddrInUse = errors.New("vsock: socket path in use")
	// ErrNotPaused: Save was called on an active device that is not paused.
	ErrNotPaused = errors.New("vsock: device not paused")
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("vsock: device closed")
	// ErrBadState: a saved state that cannot be decoded or used.
	ErrBadState = errors.New("vsock: bad saved state")
	// ErrQueues: the transport activated the device with the wrong number
	// of queues.
	ErrQueues = errors.New("vsock: wrong number of queues")

	// errBadHandshake: a host client did not send "CONNECT <port>\n".
	errBadHandshake = errors.New("vsock: bad host handshake")
)
