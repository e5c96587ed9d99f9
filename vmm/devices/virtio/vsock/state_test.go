package vsock_test

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/devices/virtio/mmio"
	"github.com/embervm/ember/vmm/devices/virtio/vsock"
)

// TestSnapshotRestore saves a device with a live connection, restores it
// behind a restored transport on the same guest memory, and checks the
// TRANSPORT_RESET event, that the stale connection is refused, and that
// new connections work.
func TestSnapshotRestore(t *testing.T) {
	tests := []struct {
		name   string
		newCID uint64 // 0 keeps the saved CID
	}{
		{"same CID", 0},
		{"new CID", 42},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuest(t, nil)
			g.start()
			old, oldR, hp := g.connectFromHost(1024, 4096)

			if _, err := g.dev.Save(); !errors.Is(err, vsock.ErrNotPaused) {
				t.Fatalf("Save while running: %v, want ErrNotPaused", err)
			}
			g.tr.Pause()
			st, err := g.dev.Save()
			if err != nil {
				t.Fatal(err)
			}
			trSt, err := g.tr.State()
			if err != nil {
				t.Fatal(err)
			}
			blob, err := st.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			// The old VMM goes away.
			g.tr.Close()
			if err := g.dev.Close(); err != nil {
				t.Fatal(err)
			}
			old.SetReadDeadline(time.Now().Add(waitLong))
			if b, err := io.ReadAll(oldR); err != nil || len(b) != 0 {
				t.Fatalf("old client read %q, %v", b, err)
			}

			var st2 vsock.State
			if err := st2.UnmarshalBinary(blob); err != nil {
				t.Fatal(err)
			}
			dev, err := vsock.Restore(vsock.Config{GuestCID: tt.newCID, UDSPath: g.path}, st2)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := mmio.Restore(mmio.Config{Device: dev, Memory: g.mem, Interrupt: g.irq}, trSt)
			if err != nil {
				dev.Close()
				t.Fatal(err)
			}
			g.setDevice(dev, tr)

			deadline := time.Now().Add(waitLong)
			for len(g.events) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no event after restore")
				}
				g.wait(100 * time.Millisecond)
			}
			if len(g.events) != 1 || g.events[0] != vsock.EventTransportReset {
				t.Fatalf("events %v, want one TRANSPORT_RESET", g.events)
			}
			cid := uint64(guestCID)
			if tt.newCID != 0 {
				cid = tt.newCID
			}
			var cfg [8]byte
			tr.Read(mmio.ConfigSpace, cfg[:])
			if got := binary.LittleEndian.Uint64(cfg[:]); got != cid {
				t.Fatalf("guest_cid %d after restore, want %d", got, cid)
			}
			if tt.newCID != 0 {
				return // the test guest's packets carry the old CID
			}
			// The guest still talks on its stale connection: refused.
			h := hdr(vsock.OpRW, 1024, hp)
			h.Len = 3
			g.send(h, []byte("old"))
			g.expect(vsock.OpRST, hp, 1024)
			// A new connection works.
			c, r, hp2 := g.connectFromHost(1024, 4096)
			h = hdr(vsock.OpRW, 1024, hp2)
			h.Len = 4
			g.send(h, []byte("new\n"))
			if line, err := readLine(t, c, r); err != nil || line != "new" {
				t.Fatalf("host read %q, %v", line, err)
			}
			// The event is sent once per restore.
			g.expectQuiet(50 * time.Millisecond)
			if len(g.events) != 1 {
				t.Fatalf("events %v", g.events)
			}
		})
	}
}

func TestStateEncoding(t *testing.T) {
	good, _ := vsock.State{GuestCID: 77}.MarshalBinary()
	badVersion := append([]byte(nil), good...)
	badVersion[0] = 9
	hostCID := append([]byte(nil), good...)
	binary.LittleEndian.PutUint64(hostCID[4:], 2)
	tests := []struct {
		name string
		b    []byte
		err  error
	}{
		{"round trip", good, nil},
		{"empty", nil, vsock.ErrBadState},
		{"short", good[:11], vsock.ErrBadState},
		{"long", append(append([]byte(nil), good...), 0), vsock.ErrBadState},
		{"version", badVersion, vsock.ErrBadState},
		{"host CID", hostCID, vsock.ErrBadState},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s vsock.State
			err := s.UnmarshalBinary(tt.b)
			if !errors.Is(err, tt.err) {
				t.Fatalf("UnmarshalBinary: %v, want %v", err, tt.err)
			}
			if err == nil && s.GuestCID != 77 {
				t.Fatalf("CID %d", s.GuestCID)
			}
		})
	}
	if _, err := vsock.Restore(vsock.Config{UDSPath: t.TempDir() + "/x"}, vsock.State{GuestCID: 1}); !errors.Is(err, vsock.ErrBadState) {
		t.Fatalf("Restore of CID 1: %v", err)
	}
}
