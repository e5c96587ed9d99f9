// Package testguest builds and runs small x86-64 guest programs for testing
// the VMM on hosts whose KVM runs only guest user-mode (CPL3) code natively.
//
// A test guest is flat machine code (written with Asm) that starts directly
// in 64-bit long mode: identity page tables cover the first 4 GiB with user
// pages, the GDT has kernel and user segments, and by default the code runs
// at CPL3 with IOPL 3 so its port I/O reaches the VMM. It talks to the VMM
// through the test ports (report a value, print a byte, exit with a code)
// and the test MMIO device. See layout.go for the memory map.
package testguest
