package network

import "errors"

// Sentinel errors.
var (
	// ErrNamespace means the pod's network namespace cannot be entered.
	ErrNamespace = errors.New("network: pod network namespace")
	// ErrNoInterface means the namespace has no interface to hand to the
	// VM besides loopback (a pod without network: not an error for
	// Discover, which returns nil).
	ErrNoInterface = errors.New("network: no interface")
	// ErrRedirect means the tc redirects could not be set up or removed.
	ErrRedirect = errors.New("network: tc redirect")
)
