// Package pool is ember's warm pool: it keeps VMM processes that have
// already done everything a start needs except the last step (created the
// KVM VM, mapped and restored memory and vCPU state) and wait paused, so
// that a start is a hand-over.
//
// A Manager keeps Profile.Size ready VMM processes per profile (each an
// `ember vmm` process with its own API socket) and replenishes them in the
// background. Claim hands one over: it re-identifies the VM (fresh nonce,
// clock, MAC, id: never shared between two claims), optionally resumes it
// (else it waits paused for the claimer, who may attach drives first), and
// returns its pid, API socket and vsock socket; from then on the VMM
// belongs to the claimer, who ends it, and outlives the pool. When no VM
// is ready, Claim falls back to a cold start and says so. The claim
// reaches a pooled VMM on its lease socket (ember vmm --lease-fd), where
// the VM's first vCPU thread waits for it; a pooled VMM whose pool dies
// before claiming it stops itself (its lease closes).
package pool
