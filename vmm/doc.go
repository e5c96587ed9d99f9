// Package vmm is ember's virtual machine monitor core: a Machine owns a KVM
// VM, its guest memory, its vCPUs (each on its own locked OS thread) and the
// port-I/O and MMIO buses its devices sit on.
//
// A Machine is built in two steps. New creates the VM, registers memory and
// creates vCPUs; a builder (Linux boot, snapshot restore, or a test guest)
// then loads memory, sets vCPU state through VCPU.Do and inserts devices.
// Start, Pause, Resume and Stop drive the vCPUs; SaveState and RestoreState
// move their KVM state in and out while they are paused.
package vmm
