// Package ctrbench measures `ctr run --rm` end to end through a real
// containerd: the same busybox container started by the ember shim
// (io.containerd.ember.v2, a microVM per container) and by runc
// (io.containerd.runc.v2), interleaved in the same run. On hosts whose KVM
// cannot boot Linux it runs inside the nested lab (internal/lab), where
// times are TCG times: compare the two runtimes as a ratio.
//
// The same machinery gives `make demo` its container: Demo runs one
// container in a microVM and prints what it printed.
package ctrbench
