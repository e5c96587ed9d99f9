package loader

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrFormat: the image is neither an ELF64 vmlinux nor a bzImage.
	ErrFormat = errors.New("loader: unrecognized kernel image format")
	// ErrInvalidELF: an ELF header or program header field is invalid or
	// points outside the file.
	ErrInvalidELF = errors.New("loader: invalid ELF kernel")
	// ErrInvalidBzImage: the bzImage setup header is invalid or points
	// outside the file.
	ErrInvalidBzImage = errors.New("loader: invalid bzImage")
	// ErrUnsupported: the image is well formed but cannot be booted by
	// ember (not x86-64, boot protocol too old, no 64-bit entry point).
	ErrUnsupported = errors.New("loader: unsupported kernel")
	// ErrNoFit: the kernel does not fit in guest memory where it must go.
	ErrNoFit = errors.New("loader: kernel does not fit in guest memory")
	// ErrRead: reading the image failed.
	ErrRead = errors.New("loader: reading kernel image")
)
