// Package lab runs commands in the nested KVM lab: a Linux (L1) booted under
// QEMU's TCG emulator with an emulated AMD SVM CPU, whose kvm-amd gives a
// real /dev/kvm on hosts whose own KVM cannot run guest kernels.
//
// Run boots a fresh L1 for one command. L1's kernel is Debian's prebuilt
// linux-image-cloud-amd64, fetched with apt-get and cached (see
// PrepareKernel). Its initramfs is built in Go: a cached base archive holding
// busybox and the kernel modules L1 needs, followed by a per-run archive with
// the ember binary (the guest agent, PID 1), the command's spec and the
// caller's files. The agent relays the command's output and exit status over
// a virtio-serial port (package labproto); the kernel console is kept apart
// for diagnostics.
package lab
