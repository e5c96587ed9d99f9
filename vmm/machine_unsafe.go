package vmm

import "unsafe"

// hostAddr returns the address of a host mapping, for KVM's
// userspace_addr. The mapping is an mmap, which the Go GC never moves.
func hostAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
