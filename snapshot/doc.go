// Package snapshot saves a paused ember machine to disk and restores it,
// possibly in another process, with a choice of memory backends.
//
// A snapshot is a directory holding a state file ("state": machine and CPU
// description, KVM state of the VM and each vCPU, device blobs, checksum)
// and a memory file ("memory-<id>.raw": raw guest memory, sparse where pages
// are zero). A diff snapshot holds only the pages written since its parent
// and is merged onto its base before it is restored. After a restore with
// the prefetch backend has run once, the directory also holds a working-set
// file ("workingset") that later restores install in bulk.
//
// The file layout is documented in docs/snapshots.md; format.go, state.go
// and workingset.go are its implementation.
package snapshot
