package vmm_test

import (
	"context"
	"testing"
	"time"

	"github.com/embervm/ember/internal/testguest"
)

// TestSaveRestoreAnyInstant moves each of testguest.HopChecks' guests from
// machine to machine 40 times, pausing it at arbitrary instants, saving
// its state and restoring it into a fresh VM, and checks that it ends as
// an uninterrupted run does (internal/e2e TestNativeTestGuestHopping does
// the same on a KVM with hardware virtualization).
func TestSaveRestoreAnyInstant(t *testing.T) {
	sys := openKVM(t)
	checks, err := testguest.HopChecks()
	if err != nil {
		t.Fatal(err)
	}
	for _, hc := range checks {
		t.Run(hc.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r, err := hc.Hop(ctx, sys)
			if r != nil {
				t.Logf("%d moves: %+v", r.Hops, r)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
