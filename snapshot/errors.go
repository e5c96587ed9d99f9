package snapshot

import "errors"

// Sentinel errors. Every error from this package that is about the content
// of a snapshot wraps one of them, so callers can tell a damaged file from a
// snapshot that does not fit the machine.
var (
	// ErrBadMagic: the file is not an ember snapshot (or working-set) file.
	ErrBadMagic = errors.New("snapshot: not an ember snapshot file (bad magic)")
	// ErrVersion: the file was written by a newer, incompatible format
	// (a newer major version).
	ErrVersion = errors.New("snapshot: unsupported format version")
	// ErrChecksum: the file's checksum does not match its content.
	ErrChecksum = errors.New("snapshot: checksum mismatch")
	// ErrTruncated: the file ends before the data it declares.
	ErrTruncated = errors.New("snapshot: truncated file")
	// ErrCorrupt: a length, offset, count or value in the file is invalid.
	ErrCorrupt = errors.New("snapshot: corrupt file")
	// ErrMismatch: the snapshot does not fit the machine it is restored
	// into (vCPU count, memory layout, CPU vendor).
	ErrMismatch = errors.New("snapshot: snapshot does not match machine")
	// ErrDiff: the operation needs a full snapshot but was given a diff, or
	// a diff does not apply to the given base.
	ErrDiff = errors.New("snapshot: diff snapshot")
	// ErrNoDirtyLog: a diff snapshot needs a machine with dirty logging.
	ErrNoDirtyLog = errors.New("snapshot: machine has no dirty log")
	// ErrBackend: an unknown memory backend was requested.
	ErrBackend = errors.New("snapshot: unknown memory backend")
	// ErrHandler: the userfaultfd handler failed; the machine it served
	// was stopped.
	ErrHandler = errors.New("snapshot: memory fault handler failed")
)
