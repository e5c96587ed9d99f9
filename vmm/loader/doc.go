// Package loader places a Linux kernel image in guest memory: an ELF64
// vmlinux (PT_LOAD segments at their physical addresses) or a bzImage (the
// protected-mode kernel at 1 MiB, entered through its 64-bit entry point).
//
// The loader only loads. It reports where the kernel went and, for a
// bzImage, the setup header that the boot configurator (package
// vmm/arch/x86) copies into the zero page; writing boot parameters is not its
// job.
//
// Every field read from the image is checked against the image's size and
// against guest memory before it is used: a truncated or malformed kernel is
// an error that wraps one of this package's sentinel errors, never a panic
// or a write outside guest memory.
package loader
