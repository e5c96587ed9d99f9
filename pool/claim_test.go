package pool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
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
	return serveAt(t, m, filepath.Join(t.TempDir(), "pool.sock"))
}

// serveAt runs m's API on the socket sock for the test.
func serveAt(t *testing.T, m *Manager, sock string) *Client {
	t.Helper()
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
		{"id with a slash", c, ClaimRequest{Profile: "tg", ID: "a/b"}, ErrBadRequest},
		{"id too long", c, ClaimRequest{Profile: "tg", ID: strings.Repeat("f", 65)}, ErrBadRequest},
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

// TestClaimProtocols: the pool's socket speaks both the claim stream
// (Client.Claim, one connection kept for sequential claims) and HTTP
// (POST /claim, for curl), and answers a malformed claim line with 400.
func TestClaimProtocols(t *testing.T) {
	m, _ := newPool(t, 2, 0)
	waitReady(t, m, 2)
	c := serve(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The claim stream, three times on one connection: with a deadline,
	// with a short one, and (once that has passed) with none, which must
	// not inherit the one before.
	var short time.Time
	for i := 0; i < 3; i++ {
		cctx := ctx
		switch i {
		case 1:
			var c context.CancelFunc
			cctx, c = context.WithTimeout(ctx, 2*time.Second)
			defer c()
			short, _ = cctx.Deadline()
		case 2:
			time.Sleep(time.Until(short) + 100*time.Millisecond)
			cctx = context.Background()
		}
		cl, err := c.Claim(cctx, ClaimRequest{Profile: "tg", Resume: true})
		if err != nil {
			t.Fatalf("claim %d: %v", i+1, err)
		}
		if err := finish(ctx, cl, true); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		idle := len(c.idle)
		c.mu.Unlock()
		if idle != 1 {
			t.Fatalf("after claim %d the client keeps %d idle stream connections, want 1", i+1, idle)
		}
	}

	// HTTP on the same socket.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", c.path)
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://pool/claim", "application/json", strings.NewReader(`{"profile":"tg","resume":true}`))
	if err != nil {
		t.Fatal(err)
	}
	var cl Claim
	err = json.NewDecoder(resp.Body).Decode(&cl)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /claim: %s, %v", resp.Status, err)
	}
	if err := finish(ctx, &cl, true); err != nil {
		t.Fatal(err)
	}

	// A malformed claim line.
	conn, err := net.Dial("unix", c.path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("{\"profile\": 7}\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var a streamAnswer
	if err := json.Unmarshal([]byte(line), &a); err != nil || a.Status != http.StatusBadRequest || !strings.Contains(a.Error, "malformed") {
		t.Fatalf("answer to a malformed claim: %q (%v)", line, err)
	}
}

// TestClaimFromHTTPOnlyDaemon: a client claims from a daemon that predates
// the claim stream (HTTP only) by falling back to POST /claim.
func TestClaimFromHTTPOnlyDaemon(t *testing.T) {
	m, _ := newPool(t, 1, 0)
	waitReady(t, m, 1)
	sock := filepath.Join(t.TempDir(), "old.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler(m)}
	go srv.Serve(l)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := NewClient(sock)
	defer c.Close()
	cl, err := c.Claim(ctx, ClaimRequest{Profile: "tg", Resume: true, NoCold: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := finish(ctx, cl, true); err != nil {
		t.Fatal(err)
	}
	if st := m.Status()[0]; st.Claimed != 1 {
		t.Fatalf("status %+v: want exactly one claim", st)
	}
}

// TestClaimCancelled: a claim whose context ends while the daemon works
// on it (here a cold start, made slow) returns the context's error at
// once; the client does not reuse its connection, the daemon ends the VMM
// it claimed for nobody, and the client's next claim works.
func TestClaimCancelled(t *testing.T) {
	// A VMM binary that starts half a second late: the contexts below
	// (1 ms) end well before any cold start could, even on a loaded host.
	slow := filepath.Join(t.TempDir(), "slow-ember")
	script := fmt.Sprintf("#!/bin/sh\nsleep 0.5\nexec %s \"$@\"\n", emberBin)
	if err := os.WriteFile(slow, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	m, run := newPoolOf(t, slow, 0, 0)
	c := serve(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			cctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(time.Millisecond, cancel)
			return cctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cctx, cancel := tc.ctx()
			defer cancel()
			t0 := time.Now()
			cl, err := c.Claim(cctx, ClaimRequest{Profile: "tg", Resume: true})
			if !errors.Is(err, tc.want) {
				t.Fatalf("claim: %+v, %v; want %v", cl, err, tc.want)
			}
			if d := time.Since(t0); d > 400*time.Millisecond {
				t.Fatalf("the claim returned %v after its context ended", d)
			}
			c.mu.Lock()
			idle := len(c.idle)
			c.mu.Unlock()
			if idle != 0 {
				t.Fatalf("the client keeps %d idle connections after a cancelled claim", idle)
			}
			deadline := time.Now().Add(20 * time.Second)
			for len(vmmPIDs(t, run)) != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("the VMM started for the cancelled claim still runs: %v", vmmPIDs(t, run))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	cl, err := c.Claim(ctx, ClaimRequest{Profile: "tg", Resume: true})
	if err != nil {
		t.Fatalf("claim after cancelled ones: %v", err)
	}
	if err := finish(ctx, cl, true); err != nil {
		t.Fatal(err)
	}
}

// TestStalledConnectionsDoNotBlockClaims: connections that send nothing,
// or only part of a claim line, do not hold up other claimers' accepts.
func TestStalledConnectionsDoNotBlockClaims(t *testing.T) {
	m, _ := newPool(t, 2, 0)
	waitReady(t, m, 2)
	c := serve(t, m)
	for _, partial := range []string{"", `{"profile":`} {
		conn, err := net.Dial("unix", c.path)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if partial != "" {
			if _, err := conn.Write([]byte(partial)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond) // let the daemon accept it
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cl, err := NewClient(c.path).Claim(ctx, ClaimRequest{Profile: "tg", Resume: true, NoCold: true})
		cancel()
		if err != nil {
			t.Fatalf("claim beside a connection that sent %q: %v", partial, err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
		err = finish(ctx, cl, true)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestIdleTrimOnlyAhead: the VMMs the pool keeps ready trim what they
// map while they idle (ember vmm --idle-trim); a cold start's VMM, claimed
// at once, does not spend the time.
func TestIdleTrimOnlyAhead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		size   int
		source string
		trim   bool
	}{{1, "pool", true}, {0, "cold", false}} {
		m, _ := newPool(t, tc.size, 0)
		waitReady(t, m, tc.size)
		cl, err := m.Claim(ctx, "tg", ClaimOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cl.PID))
		if err != nil {
			t.Fatal(err)
		}
		if cl.Source != tc.source || strings.Contains(string(cmd), "\x00--idle-trim\x00") != tc.trim {
			t.Errorf("a %s claim's VMM runs %q, want --idle-trim: %v", cl.Source, strings.ReplaceAll(string(cmd), "\x00", " "), tc.trim)
		}
		if err := finish(ctx, cl, false); err != nil {
			t.Fatal(err)
		}
	}
}
