// Package labdemo exercises labtest.Main end to end: its TestNative* tests
// need a KVM that runs guest kernels and so run in the nested lab on hosts
// without one. It holds no code besides its tests.
package labdemo

// FailEnv enables TestNativeDeliberateFailure, which fails in L1 with
// FailMarker in its message; labtest's own tests use it to check that an
// inner failure fails the outer run.
const (
	FailEnv    = "EMBER_LABDEMO_FAIL"
	FailMarker = "deliberate inner failure 7f3a"
)

// HangEnv enables TestNativeHang, which blocks until the test binary's
// -test.timeout ends it.
const HangEnv = "EMBER_LABDEMO_HANG"
