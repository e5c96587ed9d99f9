//go:build !amd64

package lab

// tscKHz is unknown off amd64; L1's kernel calibrates its TSC itself.
func tscKHz() uint64 { return 0 }
