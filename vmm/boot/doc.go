// Package boot builds a machine that boots a Linux kernel: guest memory laid
// out around the MMIO hole, the kernel (vmlinux or bzImage) and initrd
// loaded, boot parameters with the e820 map and command line, the MP table,
// per-vCPU CPUID, MSRs, FPU and LAPIC set up, vCPU 0 in 64-bit mode at the
// kernel's entry, and the legacy devices (16550 console, i8042 for reboot,
// boot-time marker).
//
// The loader (vmm/loader) and the boot-parameter writer (vmm/arch/x86) stay
// separate, as in rust-vmm's linux-loader; this package is the builder that
// calls them in order.
package boot
