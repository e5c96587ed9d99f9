// Package labtest lets a package's tests that need a KVM able to run guest
// kernels ("native" KVM) run inside the nested lab when the host lacks one.
//
// Name such tests TestNative* and call Main from the package's TestMain:
//
//	func TestMain(m *testing.M) { labtest.Main(m) }
//
// On a host with native KVM (see NativeKVM), or inside the lab, Main just
// runs the tests. Elsewhere it runs the other tests on the host, then boots
// one L1 for the whole package and runs the selected TestNative* tests there
// from the same compiled test binary, streaming their output, and exits
// non-zero if they fail. Test binaries are best built static, with
// CGO_ENABLED=0 (make test does); a dynamically linked one (cgo, -race)
// runs too, with its host libraries copied into L1.
//
// Environment knobs:
//
//	EMBER_LAB=off       skip the native tests (reported as skipped, with the reason)
//	EMBER_LAB=force     use the lab even on a host with native KVM
//	EMBER_LAB_EMBER=P   use the static ember binary P instead of building one
//	EMBER_LAB_CONSOLE=F write L1's kernel console to file F
//	EMBER_LAB_CPUS=N, EMBER_LAB_MEM=MiB   size L1
//	EMBER_LAB_QEMU=P    use the QEMU binary P
//
// Variables named EMBER_* (and GOTRACEBACK, GODEBUG) are passed to the
// tests in L1. A package's testdata directory is copied into L1 next to the
// test binary, which runs there with the package directory as its working
// directory, as on the host.
package labtest
