// Package e2e holds ember's end-to-end acceptance tests for Linux guests:
// the project's guest kernel booted by ember's VMM (vmm/boot) with the
// virtio devices driven by the real Linux drivers, and the guest agent as
// /init serving containers over vsock.
//
// Every test is a TestNative* test (internal/lab/labtest): on hosts whose
// KVM cannot run guest kernels they run in one nested-lab L1 for the whole
// package; TestMain builds the fixtures (guest kernel, initramfs images,
// a busybox ext4 rootfs) on the host and copies them in.
//
//	CGO_ENABLED=0 go test -v ./internal/e2e/
package e2e
