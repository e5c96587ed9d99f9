package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// newDirectPool is newPool with a ready directory (ReadyDir of its
// socket), served: its Client claims ready VMs directly.
func newDirectPool(t *testing.T, size int, idle time.Duration) (*Manager, *Client, string) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "pool.sock")
	m, err := New(Config{Ember: emberBin, RunDir: filepath.Join(dir, "run"), ReadyDir: ReadyDir(sock),
		Profiles: []Profile{testProfile(size, idle)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, serveAt(t, m, sock), filepath.Join(ReadyDir(sock), "tg")
}

// slotNames lists a profile's ready directory.
func slotNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// waitStatus waits until ok holds for the profile's status.
func waitStatus(t *testing.T, m *Manager, what string, ok func(ProfileStatus) bool) ProfileStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := m.Status()[0]
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool never got %s: %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDirectClaim: a Client claims a ready VM directly from the ready
// directory; the daemon counts it, keeps the slots dense and refills.
func TestDirectClaim(t *testing.T) {
	m, c, slots := newDirectPool(t, 2, 0)
	waitStatus(t, m, "2 ready", func(st ProfileStatus) bool { return st.Ready == 2 && st.Starting == 0 })
	if got := slotNames(t, slots); !slices.Equal(got, []string{"0", "1"}) {
		t.Fatalf("ready directory %v, want slots 0 and 1", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cl, err := c.Claim(ctx, ClaimRequest{Profile: "tg", Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if cl.Source != "pool" || cl.ID == "" || cl.Identity.ID != cl.ID || filepath.Base(cl.Socket) != cl.ID+".sock" || cl.PID <= 0 {
		t.Fatalf("direct claim %+v: want the VMM's id, pid and socket", cl)
	}
	if err := finish(ctx, cl, true); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, "the direct claim counted and refilled", func(st ProfileStatus) bool {
		return st.Claimed == 1 && st.Direct == 1 && st.Ready == 2 && st.Starting == 0
	})
	if got := slotNames(t, slots); !slices.Equal(got, []string{"0", "1"}) {
		t.Fatalf("ready directory after a claim and the refill: %v, want slots 0 and 1", got)
	}

	// Named, paused: the claimer resumes it.
	cl, err = c.Claim(ctx, ClaimRequest{Profile: "tg", ID: "named-1"})
	if err != nil {
		t.Fatal(err)
	}
	if cl.ID != "named-1" || cl.Identity.ID != "named-1" {
		t.Fatalf("named claim %+v", cl)
	}
	if err := finish(ctx, cl, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Claim(ctx, ClaimRequest{Profile: "tg", ID: "no/slash"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("claim with a bad id: %v, want ErrBadRequest", err)
	}

	// Through the daemon, on request.
	waitStatus(t, m, "2 ready", func(st ProfileStatus) bool { return st.Ready == 2 && st.Starting == 0 })
	cl, err = c.Claim(ctx, ClaimRequest{Profile: "tg", Resume: true, ViaDaemon: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := finish(ctx, cl, true); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, m, "3 claims", func(st ProfileStatus) bool { return st.Claimed == 3 })
	if st.Direct != 2 {
		t.Fatalf("status %+v: want 2 of the 3 claims direct", st)
	}
}

// TestDirectClaimEmpty: with every ready VM claimed directly, a claim
// finds no slot and goes to the daemon: cold, or ErrEmpty with NoCold,
// even before the daemon has heard of the direct claims.
func TestDirectClaimEmpty(t *testing.T) {
	m, c, slots := newDirectPool(t, 2, 0)
	waitStatus(t, m, "2 ready", func(st ProfileStatus) bool { return st.Ready == 2 && st.Starting == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var claims []*Claim
	for i := 0; i < 2; i++ {
		cl, err := c.Claim(ctx, ClaimRequest{Profile: "tg"})
		if err != nil {
			t.Fatal(err)
		}
		claims = append(claims, cl)
	}
	if _, err := c.Claim(ctx, ClaimRequest{Profile: "tg", NoCold: true}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("NoCold claim of an empty pool: %v, want ErrEmpty", err)
	}
	cold, err := c.Claim(ctx, ClaimRequest{Profile: "tg", Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if cold.Source != "cold" {
		t.Fatalf("claim of an empty pool came from %s", cold.Source)
	}
	for _, cl := range append(claims, cold) {
		if err := finish(ctx, cl, cl == cold); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus(t, m, "the claims counted", func(st ProfileStatus) bool { return st.Claimed == 3 && st.Direct == 2 && st.Cold == 1 })
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(slots)); !os.IsNotExist(err) {
		t.Fatalf("ready directory left after Close: %v", err)
	}
}

// TestDirectClaimReaping: reaped idle VMs leave the ready directory.
func TestDirectClaimReaping(t *testing.T) {
	m, _, slots := newDirectPool(t, 2, 300*time.Millisecond)
	waitStatus(t, m, "2 reaped", func(st ProfileStatus) bool { return st.Reaped == 2 })
	if got := slotNames(t, slots); len(got) != 0 {
		t.Fatalf("ready directory after reaping: %v, want empty", got)
	}
}

// TestDirectClaimKilledVMM: a ready VMM killed in its slot is skipped by
// claimers and replaced.
func TestDirectClaimKilledVMM(t *testing.T) {
	m, c, _ := newDirectPool(t, 2, 0)
	waitStatus(t, m, "2 ready", func(st ProfileStatus) bool { return st.Ready == 2 && st.Starting == 0 })
	m.mu.Lock()
	victim := m.profiles["tg"].slots[0]
	m.mu.Unlock()
	victim.cmd.Process.Kill()
	<-victim.exited
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := c.Claim(ctx, ClaimRequest{Profile: "tg", Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if cl.Source != "pool" || cl.PID == victim.cmd.Process.Pid {
		t.Fatalf("claim %+v after the VMM in slot 0 was killed", cl)
	}
	if err := finish(ctx, cl, true); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, "recovery", func(st ProfileStatus) bool { return st.Failed == 1 && st.Ready == 2 && st.Starting == 0 })
}

// TestConcurrentDirectAndDaemonClaims: 50 concurrent claims against a
// pool of 8, half direct and half through the daemon, all succeed (some
// cold) and no VM is handed out twice.
func TestConcurrentDirectAndDaemonClaims(t *testing.T) {
	m, c, _ := newDirectPool(t, 8, 0)
	waitStatus(t, m, "8 ready", func(st ProfileStatus) bool { return st.Ready == 8 && st.Starting == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 50
	claims := make([]*Claim, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Go(func() {
			claims[i], errs[i] = NewClient(c.path).Claim(ctx, ClaimRequest{Profile: "tg", ViaDaemon: i%2 == 1})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkDistinct(t, claims)
	fromPool := 0
	for _, cl := range claims {
		if cl.Source == "pool" {
			fromPool++
		}
	}
	if fromPool < 1 {
		t.Errorf("none of %d claims from a pool of 8", n)
	}
	for i, cl := range claims {
		wg.Go(func() { errs[i] = finish(ctx, cl, false) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// (More than 8 may come from the pool: it refills while the claims
	// run.) The daemon's counts agree with what the claimers were told.
	st := waitStatus(t, m, "every claim counted", func(st ProfileStatus) bool { return st.Claimed == n })
	if st.Cold != n-fromPool || st.Direct > fromPool {
		t.Errorf("status %+v, but %d of the claims say they came from the pool", st, fromPool)
	}
	t.Logf("%d of %d claims from the pool (%d direct), %d cold", fromPool, n, st.Direct, st.Cold)
}

// checkDistinct fails if two claims share a VMM or any part of an
// identity.
func checkDistinct(t *testing.T, claims []*Claim) {
	t.Helper()
	seen := map[string]int{}
	for i, c := range claims {
		for _, k := range []string{fmt.Sprint("pid ", c.PID), "socket " + c.Socket, "id " + c.ID,
			"nonce " + c.Identity.Nonce, "mac " + c.Identity.MAC} {
			if j, ok := seen[k]; ok && !strings.HasSuffix(k, " ") {
				t.Fatalf("claims %d and %d share %s: %+v, %+v", j, i, k, claims[j], c)
			}
			seen[k] = i
		}
	}
}
