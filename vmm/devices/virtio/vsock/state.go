package vsock

import (
	"encoding/binary"
	"fmt"
)

// StateVersion is the version of State's binary encoding; a VMM stores it
// next to the blob (snapshot.DeviceState.Version).
const StateVersion = 1

// stateSize is the encoded size: version (u32), guest CID (u64).
const stateSize = 12

// State is the device's state as plain data, for snapshots.
//
// Connections are not part of it: their host ends are sockets of the
// process that took the snapshot. The queues are saved by the transport
// (mmio.State.Queues). A device restored from a State sends
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET when it is activated, so the guest
// resets its connections and re-reads the CID.
type State struct {
	// GuestCID is the guest's address.
	GuestCID uint64
}

// Save returns the device's state. An active device must be paused
// (mmio.Transport.Pause pauses it), so that it no longer touches guest
// memory.
func (d *Device) Save() (State, error) {
	var err error
	ok := d.do(func(m *muxer) {
		if m.act != nil && !m.paused {
			err = ErrNotPaused
		}
	})
	if !ok {
		return State{}, ErrClosed
	}
	if err != nil {
		return State{}, err
	}
	return State{GuestCID: d.cfg.GuestCID}, nil
}

// Restore builds a device from a saved state, listening on cfg.UDSPath
// (which may differ from the saved device's). cfg.GuestCID, if not zero,
// replaces the saved CID: the guest learns the new one from the transport
// reset. Build the transport with mmio.Restore afterwards; its activation
// of the device sends the TRANSPORT_RESET event.
func Restore(cfg Config, st State) (*Device, error) {
	if st.GuestCID <= HostCID || st.GuestCID > maxGuestCID {
		return nil, fmt.Errorf("%w: guest CID %d", ErrBadState, st.GuestCID)
	}
	if cfg.GuestCID == 0 {
		cfg.GuestCID = st.GuestCID
	}
	return newDevice(cfg, true)
}

// MarshalBinary encodes the state (StateVersion).
func (s State) MarshalBinary() ([]byte, error) {
	b := make([]byte, stateSize)
	binary.LittleEndian.PutUint32(b[0:], StateVersion)
	binary.LittleEndian.PutUint64(b[4:], s.GuestCID)
	return b, nil
}

// UnmarshalBinary decodes a state MarshalBinary encoded.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) != stateSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadState, len(b), stateSize)
	}
	if v := binary.LittleEndian.Uint32(b[0:]); v != StateVersion {
		return fmt.Errorf("%w: version %d, want %d", ErrBadState, v, StateVersion)
	}
	cid := binary.LittleEndian.Uint64(b[4:])
	if cid <= HostCID || cid > maxGuestCID {
		return fmt.Errorf("%w: guest CID %d", ErrBadState, cid)
	}
	s.GuestCID = cid
	return nil
}
