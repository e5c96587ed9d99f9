package pool

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"time"

	"github.com/embervm/ember/vmm/api"
)

// newID returns a random 12-hex-digit id.
func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewIdentity returns a fresh identity: a 32-byte random nonce, the current
// time and a random locally administered unicast MAC. No two calls share
// any of them (beyond negligible chance).
func NewIdentity(id string) api.Identity {
	var b [32 + 6]byte // one getrandom for both
	rand.Read(b[:])
	nonce, mac := b[:32], b[32:]
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	return api.Identity{
		ID:    id,
		Nonce: hex.EncodeToString(nonce),
		Time:  time.Now(),
		MAC:   net.HardwareAddr(mac).String(),
	}
}
