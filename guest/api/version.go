package api

// ProtocolVersion is the major version of the agent protocol spoken by this
// package; it is part of the service name (ember.agent.v1.Agent).
const ProtocolVersion = 1

// DefaultVsockPort is the vsock port the agent listens on inside a VM.
const DefaultVsockPort = 1024

// MaxReadBytes caps ReadStdout/ReadStderr replies (ttrpc messages are at
// most 4 MiB).
const MaxReadBytes = 1 << 20

// DefaultReadBytes is used when a read request names no size.
const DefaultReadBytes = 64 << 10
