package pool

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/api"
)

func TestConfigValidate(t *testing.T) {
	base := func(args ...string) Config {
		return Config{RunDir: "/run/x", Profiles: []Profile{{Name: "p", Size: 1, VMMArgs: args}}}
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for a valid configuration
	}{
		{"restore", base("--restore", "/snap", "--backend", "mmap"), ""},
		{"testguest", base("--testguest", "identity", "--mem", "8"), ""},
		{"no profiles", Config{RunDir: "/run/x"}, "no profiles"},
		{"no run dir", Config{Profiles: base("--testguest", "count").Profiles}, "no run_dir"},
		{"no vmm args", base(), "no vmm_args"},
		{"vsock path", base("--restore", "/snap", "--vsock-uds", "/tmp/v.sock"), "must not set --vsock-uds"},
		{"console path", base("--restore", "/snap", "-console=/tmp/c.log"), "must not set -console=/tmp/c.log"},
		{"api socket", base("--testguest", "count", "--api-sock", "/x"), "must not set --api-sock"},
		{"lease", base("--testguest", "count", "--lease-fd=5"), "must not set --lease-fd=5"},
		{"a value that looks like a flag name", base("--restore", "console"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid configuration refused: %v", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want ErrConfig with %q", err, tc.want)
			}
		})
	}
}

// serve runs m's API on a socket for the test.
func serve(t *testing.T, m *Manager) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "pool.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Serve(ctx, m, sock, slog.Default()) }()
	t.Cleanup(func() { cancel(); <-done })
	c := NewClient(sock)
	for i := 0; ; i++ {
		if _, err := c.Status(ctx); err == nil {
			return c
		} else if i == 100 {
			t.Fatalf("pool API not up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClaimAPIErrors: the client's errors carry the pool's sentinels, so a
// claimer can tell an empty pool or a missing daemon (fall back) from a
// misconfiguration.
func TestClaimAPIErrors(t *testing.T) {
	m, run := newPool(t, 0, 0)
	c := serve(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name   string
		client *Client
		req    ClaimRequest
		want   error
	}{
		{"unknown profile", c, ClaimRequest{Profile: "nope"}, ErrUnknownProfile},
		{"empty, no cold start", c, ClaimRequest{Profile: "tg", NoCold: true}, ErrEmpty},
		{"no daemon", NewClient(filepath.Join(t.TempDir(), "none.sock")), ClaimRequest{Profile: "tg"}, ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.client.Claim(ctx, tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("claim: %v, want %v", err, tc.want)
			}
		})
	}
	if pids := vmmPIDs(t, run); len(pids) != 0 {
		t.Fatalf("failed claims left VMMs: %v", pids)
	}
	if st := m.Status()[0]; st.Claimed != 0 || st.Cold != 0 {
		t.Fatalf("status after failed claims: %+v", st)
	}
}

// TestClaimedBelongsToClaimer: a VM claimed without resume waits paused
// for its claimer, which drives it through the VMM's API; the pool's Close
// leaves it alone, and the claimer ends it by pid.
func TestClaimedBelongsToClaimer(t *testing.T) {
	m, run := newPool(t, 1, 0)
	waitReady(t, m, 1)
	c := serve(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := c.Claim(ctx, ClaimRequest{Profile: "tg", ID: "mine", NoCold: true})
	if err != nil {
		t.Fatal(err)
	}
	if cl.Source != "pool" || cl.ID != "mine" || cl.Identity.ID != "mine" || cl.Vsock != "" || cl.Console != "" {
		t.Fatalf("claim %+v", cl)
	}
	vc := api.NewClient(cl.Socket)
	defer vc.Close()
	if info, err := vc.Info(ctx); err != nil || info.State != api.StatePaused {
		t.Fatalf("claimed VM without resume: %+v, %v; want paused", info, err)
	}
	m.Close()
	if pids := vmmPIDs(t, run); len(pids) != 1 || pids[0] != cl.PID {
		t.Fatalf("VMMs after the pool's Close: %v, want the claimed %d", pids, cl.PID)
	}
	if err := finish(ctx, cl, false); err != nil {
		t.Fatal(err)
	}
	// A claimed VMM whose VM ended lingers for a last /wait; its claimer
	// may end it by pid at any time.
	syscall.Kill(cl.PID, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for len(vmmPIDs(t, run)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("claimed VMM %d survived SIGKILL", cl.PID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVMMArgsReservedFlags: a profile that sets a per-VMM path is refused
// before any VMM starts.
func TestVMMArgsReservedFlags(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	_, err := New(Config{Ember: emberBin, RunDir: run, Profiles: []Profile{{
		Name: "tg", Size: 1, VMMArgs: []string{"--testguest", "identity", "--console", "/tmp/c"},
	}}}, nil)
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("New: %v, want ErrConfig", err)
	}
	if pids := vmmPIDs(t, run); len(pids) != 0 {
		t.Fatalf("VMMs started for a refused configuration: %v", pids)
	}
}
