package vmmproc

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/api"
)

// TestServeLease drives the lease protocol as the warm pool does, over a
// real SOCK_SEQPACKET socket, against a test guest that waits for its
// identity and then reports it.
func TestServeLease(t *testing.T) {
	nonce := strings.Repeat("a1", 32)
	want, _ := testguest.IdentityValue(nonce)
	tests := []struct {
		name    string
		send    string // the claim message ("" closes the lease instead)
		wantErr string // in the answer
		resumed bool   // the guest runs without an API resume
		lost    bool
	}{
		{name: "claim and resume", send: `{"identity":{"id":"vm1","nonce":"` + nonce + `"},"resume":true}`, resumed: true},
		{name: "claim paused", send: `{"identity":{"id":"vm1","nonce":"` + nonce + `"}}`},
		{name: "malformed", send: `{"identity":`, wantErr: "malformed lease claim"},
		{name: "no nonce", send: `{"identity":{"id":"vm1"},"resume":true}`, wantErr: "needs an id and a nonce"},
		{name: "supervisor gone", lost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, inst := identityInstance(t, ctx, 4096)
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			pool := fds[0]
			defer unix.Close(pool)
			if err := inst.ServeLease(ctx, os.NewFile(uintptr(fds[1]), "lease"), func() {}, LeaseOptions{}); err == nil {
				t.Fatal("ServeLease before StartPaused succeeded")
			}
			if fds, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
				t.Fatal(err)
			}
			unix.Close(pool)
			pool = fds[0]
			inst.StartPaused()
			lost := make(chan struct{})
			if err := inst.ServeLease(ctx, os.NewFile(uintptr(fds[1]), "lease"), func() { close(lost) }, LeaseOptions{}); err != nil {
				t.Fatal(err)
			}
			// Held: the API's state changes are refused.
			if err := inst.Resume(ctx); !errors.Is(err, api.ErrConflict) {
				t.Fatalf("Resume while leased: %v, want a conflict", err)
			}
			if err := inst.SetIdentity(ctx, api.Identity{ID: "x", Nonce: nonce}); !errors.Is(err, api.ErrConflict) {
				t.Fatalf("SetIdentity while leased: %v, want a conflict", err)
			}
			if err := inst.Snapshot(ctx, api.SnapshotRequest{Dir: t.TempDir()}); !errors.Is(err, api.ErrConflict) {
				t.Fatalf("Snapshot while leased: %v, want a conflict", err)
			}
			if tt.lost {
				unix.Close(pool)
				select {
				case <-lost:
				case <-time.After(10 * time.Second):
					t.Fatal("closing the lease did not report the supervisor lost")
				}
				return
			}
			if _, err := unix.Write(pool, []byte(tt.send)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			n, err := unix.Read(pool, buf)
			if err != nil {
				t.Fatal(err)
			}
			var a api.LeaseAnswer
			if err := json.Unmarshal(buf[:n], &a); err != nil {
				t.Fatalf("answer %q: %v", buf[:n], err)
			}
			if tt.wantErr != "" {
				if !strings.Contains(a.Error, tt.wantErr) {
					t.Fatalf("answer %+v, want an error containing %q", a, tt.wantErr)
				}
				select {
				case <-lost:
				case <-time.After(10 * time.Second):
					t.Fatal("a failed claim did not end the VMM (lost not called)")
				}
				return
			}
			select {
			case <-lost:
				t.Fatal("a good claim called lost")
			default:
			}
			if a.Error != "" {
				t.Fatalf("claim failed: %s", a.Error)
			}
			// The lease is let go after the answer.
			if n, _ := unix.Read(pool, buf); n != 0 {
				t.Fatalf("lease still open after the answer (%d bytes more)", n)
			}
			if info := inst.Info(); info.Identity == nil || info.Identity.ID != "vm1" {
				t.Fatalf("identity after the claim: %+v", info.Identity)
			}
			if !tt.resumed {
				if st := inst.Info().State; st != api.StatePaused {
					t.Fatalf("state %s after a claim without resume, want paused", st)
				}
				if err := inst.Resume(ctx); err != nil {
					t.Fatal(err)
				}
			}
			ei, err := inst.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ei.Error != "" || len(ei.Reports) < 1 || ei.Reports[0] != want {
				t.Fatalf("guest ended with %+v, want identity %#x reported", ei, want)
			}
		})
	}
}
