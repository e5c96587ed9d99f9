// Package x86 prepares an x86-64 guest for a Linux 64-bit boot: the guest
// physical memory layout, the zero page (boot_params) with its e820 table
// and command line, identity page tables and a GDT for long mode, the MP
// table that describes the vCPUs and the IOAPIC, CPUID normalization with
// named CPU templates, the boot MSRs, the FPU and the local APIC's LINT
// pins.
//
// Everything here is a pure function over memory.Accessor and the kvm
// package's types: nothing issues an ioctl, so it is tested without
// /dev/kvm. The VMM applies the results (SetSregs, SetRegs, SetCPUID2,
// SetMSRs, SetFPU, SetLAPIC).
package x86
