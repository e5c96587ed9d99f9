// Package identity re-identifies a guest after it was restored from a
// snapshot: every VM restored from one snapshot starts with the same clock,
// the same random pool and the same network set-up, and the host fixes each
// of them through the agent (SetTime, AddEntropy, ConfigureNetwork).
package identity
