// Package labdemo exercises labtest.Main end to end: its TestNative* tests
// need a KVM that runs guest kernels and so run in the nested lab on hosts
// without one. It holds no code besides its tests.
package labdemo

import "time"

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

// FreezeEnv enables TestNativeFreeze, which in the first L1 of a run starves
// L1 (a real-time busy loop, so that the lab agent's heartbeat stops) and
// in any later L1 passes; labtest's own tests use it to check that a frozen
// L1 is replaced and only the tests without a result run again.
// FreezeTimeout is the lab's freeze timeout while it is set.
const (
	FreezeEnv     = "EMBER_LABDEMO_FREEZE"
	FreezeTimeout = 10 * time.Second
)
