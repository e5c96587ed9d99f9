package vmmcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/api"
)

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("vmm", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// TestGuests: every built-in test guest builds a valid image, and
// GuestNames lists them all, sorted.
func TestGuests(t *testing.T) {
	names := strings.Split(GuestNames(), ", ")
	if len(names) != len(Guests) || !slices.IsSorted(names) {
		t.Fatalf("GuestNames() = %q for %d guests", GuestNames(), len(Guests))
	}
	for _, n := range names {
		if _, err := vmmImage(n, "", 8<<20); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
}

// TestRunRefuses: argument errors come back before any VM exists.
func TestRunRefuses(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "--api-sock is required"},
		{[]string{"--api-sock", sock}, "nothing to run"},
		{[]string{"--api-sock", sock, "--testguest", "nope"}, `unknown test guest "nope"`},
		{[]string{"--api-sock", sock, "--testguest", "sum", "--image", "x"}, "not both"},
		{[]string{"--api-sock", sock, "--config", "c.json", "--testguest", "sum"}, "do not combine it with --testguest"},
		{[]string{"--api-sock", sock, "--restore", t.TempDir(), "--mem", "8"}, "do not combine it with --mem"},
		{[]string{"--api-sock", sock, "--testguest", "identity", "--lease-fd", "9", "--start"}, "drop --start"},
		{[]string{"--api-sock", sock, "--testguest", "identity", "--idle-trim"}, "--idle-trim needs --lease-fd"},
	} {
		err := Run(context.Background(), newFlagSet(), tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Run(%q) = %v, want an error saying %q", tt.args, err, tt.want)
		}
	}
	if err := Run(context.Background(), newFlagSet(), []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Run(-h) = %v, want flag.ErrHelp", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestRunIdentityGuest runs the identity test guest in this process: it
// waits paused, takes an identity and a resume, reports the identity, and
// Run returns once the final /wait was answered, its socket removed.
func TestRunIdentityGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, newFlagSet(), []string{"--api-sock", sock, "--testguest", "identity", "--mem", "8"})
	}()
	c := api.NewClient(sock)
	defer c.Close()
	var info *api.Info
	for {
		var err error
		if info, err = c.Info(ctx); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned before it served: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if info.State != api.StatePaused || info.Source != "testguest" || info.MemoryMiB != 8 {
		t.Fatalf("info %+v, want a paused test guest of 8 MiB", info)
	}
	nonce := fmt.Sprintf("%016x", time.Now().UnixNano()) + strings.Repeat("a5", 8)
	if err := c.SetIdentityAndResume(ctx, api.Identity{ID: "vm", Nonce: nonce}); err != nil {
		t.Fatal(err)
	}
	ei, err := c.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := testguest.IdentityValue(nonce)
	if ei.Error != "" || ei.Code != 0 || len(ei.Reports) == 0 || ei.Reports[0] != want {
		t.Fatalf("guest ended with %+v, want first report %#x", ei, want)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the guest ended and /wait was answered")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("API socket left behind: %v", err)
	}
}
