package vmmproc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/kvm"
)

// TestAPIEndToEnd drives a test-guest VM through the real API over a Unix
// socket: start, pause, re-identify, resume, wait.
func TestAPIEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 4 << 20
	g, inst := identityInstance(t, ctx, n)
	for i := uint64(0); i < n/8; i++ {
		g.Memory().WriteUint64(testguest.DataBase+8*i, i)
	}
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := api.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- api.Serve(sctx, l, inst, slog.Default()) }()
	defer func() { stop(); <-done }()

	c := api.NewClient(sock)
	defer c.Close()
	info, err := c.Info(ctx)
	if err != nil || info.State != api.StateNotStarted || info.ID != "vm1" || info.MemoryMiB != 8 {
		t.Fatalf("info %+v, %v", info, err)
	}
	var apiErr *api.APIError
	if err := c.Action(ctx, "explode"); !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest {
		t.Fatalf("unknown action: %v", err)
	}
	if err := c.Action(ctx, api.ActionPause); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("pause before start: %v", err)
	}
	if err := c.Action(ctx, api.ActionStart); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if err := c.Action(ctx, api.ActionPause); err != nil {
		t.Fatal(err)
	}
	if info, _ := c.Info(ctx); info.State != api.StatePaused {
		t.Fatalf("state %s after pause", info.State)
	}
	nonce := "0123456789abcdef00"
	id := api.Identity{ID: "ctr-1", Nonce: nonce, Time: time.Now()}
	if err := c.SetIdentity(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := c.SetIdentity(ctx, id); !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("second identity: %v", err)
	}
	if err := c.Action(ctx, api.ActionResume); err != nil {
		t.Fatal(err)
	}
	ei, err := c.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantID, _ := testguest.IdentityValue(nonce)
	wantSum := uint64(n/8) * (n/8 - 1) / 2
	if ei.Error != "" || len(ei.Reports) != 2 || ei.Reports[0] != wantID || ei.Reports[1] != wantSum {
		t.Fatalf("exit %+v, want reports [%#x %d]", ei, wantID, wantSum)
	}
	m, err := c.Metrics(ctx)
	if err != nil || m.Exits == 0 || m.RSSBytes == 0 {
		t.Fatalf("metrics %+v, %v", m, err)
	}
	if info, _ := c.Info(ctx); info.State != api.StateStopped || info.Identity == nil || info.Identity.ID != "ctr-1" {
		t.Fatalf("final info %+v", info)
	}
}

func TestMalformedBody(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx := context.Background()
	code, _ := testguest.SpinProgram(10)
	g, err := testguest.NewMachine(ctx, sys, testguest.NewImage(code, testguest.MinMemory), testguest.Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	h := api.Handler(New("x", g.Machine, "testguest", Hooks{}), slog.Default())
	for _, body := range []string{"{", `{"action": 3}`, `{"action":"start","extra":1}`, strings.Repeat("[", 100)} {
		rec := httptest.NewRecorder()
		req, _ := http.NewRequest(http.MethodPut, "/actions", strings.NewReader(body))
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "malformed") {
			t.Errorf("body %q: status %d %s", body, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	req, _ := http.NewRequest(http.MethodPut, "/identity", strings.NewReader(`{"id":"a","nonce":"00112233445566778899"}`))
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotImplemented {
		t.Errorf("identity without hook: %d", rec.Code)
	}
}

// TestStartHooks: a VM started paused (a pooled, restored VM) runs its
// start hooks on its first Resume, around the vCPUs' first run, and a later
// pause/resume does not call them again.
func TestStartHooks(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, err := testguest.SpinProgram(1 << 40)
	if err != nil {
		t.Fatal(err)
	}
	g, err := testguest.NewMachine(ctx, sys, testguest.NewImage(code, 8<<20), testguest.Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var calls []string
	inst := New("vm1", g.Machine, "testguest", Hooks{
		BeforeStart: func(context.Context) error {
			calls = append(calls, fmt.Sprintf("before(exits=%d)", g.Machine.VCPUs()[0].Exits()))
			return nil
		},
	})
	inst.StartPaused()
	for i := 0; i < 2; i++ {
		if err := inst.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		if err := inst.Pause(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if want := "[before(exits=0)]"; fmt.Sprint(calls) != want {
		t.Fatalf("start hooks ran as %v, want %s", calls, want)
	}
	if err := inst.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// identityInstance is an Instance of a test guest that waits for its
// identity, then reports it and the sum of the n bytes above
// testguest.DataBase.
func identityInstance(t *testing.T, ctx context.Context, n uint64) (*testguest.Guest, *Instance) {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	code, err := testguest.WaitIdentityProgram(testguest.DataBase, n)
	if err != nil {
		t.Fatal(err)
	}
	g, err := testguest.NewMachine(ctx, sys, testguest.NewImage(code, 8<<20), testguest.Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, New("vm1", g.Machine, "testguest", Hooks{
		Reports: g.Ports.Reports,
		ApplyIdentity: func(_ context.Context, id api.Identity) error {
			return testguest.WriteIdentity(g.Memory(), id.Nonce)
		},
	})
}
