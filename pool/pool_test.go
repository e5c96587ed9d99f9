package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/api"
)

var emberBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ember-pool-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	emberBin = filepath.Join(dir, "ember")
	if err := fixtures.GoBuild(context.Background(), "./cmd/ember", emberBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const memMiB = 8

func newPool(t *testing.T, size int, idle time.Duration) (*Manager, string) {
	t.Helper()
	return newPoolOf(t, emberBin, size, idle)
}

// newPoolOf is newPool with its VMMs run by the binary ember.
func newPoolOf(t *testing.T, ember string, size int, idle time.Duration) (*Manager, string) {
	t.Helper()
	run := filepath.Join(t.TempDir(), "run")
	m, err := New(Config{Ember: ember, RunDir: run, Profiles: []Profile{testProfile(size, idle)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, run
}

// testProfile is the tests' profile "tg": identity test guests booted
// fresh.
func testProfile(size int, idle time.Duration) Profile {
	return Profile{Name: "tg", Size: size, MemoryMiB: memMiB, IdleTimeout: Duration(idle),
		VMMArgs: []string{"--testguest", "identity", "--mem", fmt.Sprint(memMiB)}}
}

func waitReady(t *testing.T, m *Manager, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if st := m.Status()[0]; st.Ready >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("pool not ready: %+v", m.Status())
}

// vmmPIDs lists live `ember vmm` processes whose sockets are under run.
func vmmPIDs(t *testing.T, run string) []int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if strings.Contains(string(cmd), run) {
			stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
				continue
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

// finish resumes-and-waits a claimed VM through its API and checks it saw
// its own identity.
func finish(ctx context.Context, c *Claim, resumed bool) error {
	cl := api.NewClient(c.Socket)
	defer cl.Close()
	if !resumed {
		if err := cl.Action(ctx, api.ActionResume); err != nil {
			return err
		}
	}
	ei, err := cl.Wait(ctx)
	if err != nil {
		return err
	}
	want, _ := testguest.IdentityValue(c.Identity.Nonce)
	if ei.Error != "" || len(ei.Reports) != 2 || ei.Reports[0] != want || ei.Reports[1] != 0 {
		return fmt.Errorf("claimed VM %s ended with %+v, want identity %#x and sum 0", c.ID, ei, want)
	}
	return nil
}

func TestClaimResume(t *testing.T) {
	m, run := newPool(t, 2, 0)
	waitReady(t, m, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := m.Claim(ctx, "tg", ClaimOptions{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != "pool" || c.PID == 0 || !strings.HasPrefix(c.Socket, run) {
		t.Fatalf("claim %+v", c)
	}
	t.Logf("claim from pool: wait %v identify+resume %v total %v", c.Wait, c.Identify, c.Total)
	if err := finish(ctx, c, true); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Claim(ctx, "nope", ClaimOptions{}); err == nil {
		t.Fatal("claim of unknown profile succeeded")
	}
	waitReady(t, m, 2) // replenished
	if st := m.Status()[0]; st.Claimed != 1 || st.Cold != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestConcurrentClaims(t *testing.T) {
	m, _ := newPool(t, 8, 0)
	waitReady(t, m, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 50
	claims := make([]*Claim, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			claims[i], errs[i] = m.Claim(ctx, "tg", ClaimOptions{})
		}()
	}
	wg.Wait()
	pids, socks, nonces, macs := map[int]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	fromPool := 0
	for i, c := range claims {
		if errs[i] != nil {
			t.Fatalf("claim %d: %v", i, errs[i])
		}
		if pids[c.PID] || socks[c.Socket] || nonces[c.Identity.Nonce] || macs[c.Identity.MAC] {
			t.Fatalf("claim %d handed out a VM or identity twice: %+v", i, c)
		}
		pids[c.PID], socks[c.Socket], nonces[c.Identity.Nonce], macs[c.Identity.MAC] = true, true, true, true
		if c.Source == "pool" {
			fromPool++
		}
	}
	if fromPool < 1 || fromPool > 8+m.Status()[0].Claimed {
		t.Errorf("%d claims from the pool", fromPool)
	}
	t.Logf("%d of %d claims from the pool, %d cold", fromPool, n, n-fromPool)
	for i, c := range claims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = finish(ctx, c, false)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("claimed VM %d: %v", i, err)
		}
	}
}

func TestKilledVMMReplaced(t *testing.T) {
	m, _ := newPool(t, 2, 0)
	waitReady(t, m, 2)
	m.mu.Lock()
	victim := m.profiles["tg"].ready[0]
	m.mu.Unlock()
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := m.Status()[0]
		if st.Failed == 1 && st.Ready == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool did not recover: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.mu.Lock()
	for _, e := range m.profiles["tg"].ready {
		if e == victim {
			t.Error("killed VMM still listed as ready")
		}
	}
	m.mu.Unlock()
	ctx := context.Background()
	c, err := m.Claim(ctx, "tg", ClaimOptions{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := finish(ctx, c, true); err != nil {
		t.Fatal(err)
	}
}

func TestStopLeavesNothing(t *testing.T) {
	m, run := newPool(t, 3, 0)
	waitReady(t, m, 3)
	if n := len(vmmPIDs(t, run)); n != 3 {
		t.Fatalf("%d VMM processes, want 3", n)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if pids := vmmPIDs(t, run); len(pids) != 0 {
		t.Fatalf("VMM processes left after Close: %v", pids)
	}
	if _, err := os.Stat(run); !os.IsNotExist(err) {
		ents, _ := os.ReadDir(run)
		t.Fatalf("run dir left behind (%v) with %d entries", err, len(ents))
	}
}

// TestPoolDeathStopsUnclaimed: a pooled VMM whose pool dies without
// closing it (the lease socket closes) stops itself.
func TestPoolDeathStopsUnclaimed(t *testing.T) {
	m, run := newPool(t, 1, 0)
	waitReady(t, m, 1)
	m.mu.Lock()
	e := m.profiles["tg"].ready[0]
	m.mu.Unlock()
	e.lease.Close() // what the kernel does when the pool process dies
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("unclaimed VMM did not stop when its lease closed")
	}
	_ = run
}

// TestPoolDeathAfterClaimKeepsClaimed: a VMM whose pool sent the claim
// and died before reading the answer was claimed: it keeps running (paused,
// with its identity, for the claimer).
func TestPoolDeathAfterClaimKeepsClaimed(t *testing.T) {
	m, _ := newPool(t, 1, 0)
	waitReady(t, m, 1)
	m.mu.Lock()
	e := m.profiles["tg"].ready[0]
	m.profiles["tg"].ready = nil // the claim's pop
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &Claim{ID: e.id, PID: e.cmd.Process.Pid, Socket: e.sock, Identity: NewIdentity(e.id)}
	b, _ := json.Marshal(api.LeaseClaim{Identity: c.Identity})
	if _, err := e.lease.Write(b); err != nil {
		t.Fatal(err)
	}
	e.lease.Close() // the pool dies before the answer
	select {
	case <-e.exited:
		t.Fatalf("a claimed VMM stopped when its lease closed: %v", e.exitErr)
	case <-time.After(500 * time.Millisecond):
	}
	if err := finish(ctx, c, false); err != nil {
		t.Fatal(err)
	}
}

func TestIdleReaping(t *testing.T) {
	m, run := newPool(t, 2, 300*time.Millisecond)
	waitReady(t, m, 2)
	deadline := time.Now().Add(20 * time.Second)
	for m.Status()[0].Reaped < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("idle VMs not reaped: %+v", m.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond) // kill's grace period
	if pids := vmmPIDs(t, run); len(pids) != 0 {
		t.Fatalf("reaped VMMs still running: %v", pids)
	}
	// The next claim is cold and refills the pool.
	ctx := context.Background()
	c, err := m.Claim(ctx, "tg", ClaimOptions{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != "cold" {
		t.Errorf("claim after reaping came from %s", c.Source)
	}
	if err := finish(ctx, c, true); err != nil {
		t.Fatal(err)
	}
}
