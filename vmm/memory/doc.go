// Package memory holds a VM's guest physical memory: host mappings that back
// ranges of guest physical addresses, with bounds-checked access by guest
// physical address and per-page dirty bitmaps.
//
// Every access that names a guest physical address is checked against the
// regions before any host memory is touched: an address or length from the
// guest (a virtqueue descriptor, a boot parameter) that falls outside guest
// memory yields ErrOutOfRange, never a host fault.
package memory
