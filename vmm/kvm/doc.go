// Package kvm is a small, cgo-free binding to the Linux KVM API.
//
// It exposes typed handles for the three kinds of KVM file descriptor: the
// system (/dev/kvm), a virtual machine and a virtual CPU. Each handle offers
// only the ioctls ember uses, with the structure layouts of
// <linux/kvm.h> for x86-64. Ioctl numbers are literal values; a test checks
// that the size encoded in each number matches the Go structure passed with
// it, so a layout mistake fails the build's tests instead of corrupting memory.
//
// The package does no policy: it neither retries partial MSR reads nor orders
// state transfers. Those belong to the VMM (package vmm).
package kvm
