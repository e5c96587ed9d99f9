package identity

import "errors"

var (
	// ErrInvalidTime is a time that cannot be the host's.
	ErrInvalidTime = errors.New("invalid time")
	// ErrInvalidEntropy is an empty or oversized entropy request.
	ErrInvalidEntropy = errors.New("invalid entropy request")
	// ErrInvalidNetwork is a malformed network configuration.
	ErrInvalidNetwork = errors.New("invalid network configuration")
	// ErrNoInterface means no interface has the requested MAC address.
	ErrNoInterface = errors.New("no interface with that MAC address")
)
