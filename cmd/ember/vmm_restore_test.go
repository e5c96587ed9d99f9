package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/kvm"
)

var emberBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ember-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	emberBin = filepath.Join(dir, "ember")
	if err := fixtures.GoBuild(context.Background(), "./cmd/ember", emberBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// identitySnapshot snapshots an identity test guest with the CLI, as a
// user setting up a pool profile would.
func identitySnapshot(t *testing.T, memMiB uint64, fillPct float64) (string, *guestrun.IdentityGuest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "snap")
	out, err := exec.Command(emberBin, "snapshot", "testguest", "--program", "identity",
		"--mem", fmt.Sprint(memMiB), "--ws-percent", fmt.Sprint(fillPct), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("ember snapshot testguest: %v\n%s", err, out)
	}
	g, err := guestrun.NewIdentityGuest(memMiB<<20, fillPct)
	if err != nil {
		t.Fatal(err)
	}
	return dir, g
}

// vmmProc is a running `ember vmm` process.
type vmmProc struct {
	cmd    *exec.Cmd
	sock   string
	stderr *strings.Builder
	exited chan error
}

// startVMM starts `ember vmm --api-sock S args...` and waits until its API
// serves, or returns the error the process exited with.
func startVMM(t *testing.T, args ...string) (*vmmProc, error) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := &vmmProc{sock: sock, stderr: &strings.Builder{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(emberBin, append([]string{"vmm", "--api-sock", sock, "--ready-fd", "3"}, args...)...)
	p.cmd.ExtraFiles = []*os.File{w}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		w.Close()
		t.Fatal(err)
	}
	w.Close()
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
		p.exited <- nil
	})
	line, _ := bufio.NewReader(r).ReadString('\n')
	if line != "ready\n" {
		err := <-p.exited
		p.exited <- err
		return nil, fmt.Errorf("ember vmm exited before it was ready (%v): %s", err, p.stderr)
	}
	return p, nil
}

// TestVMMRestoreTestGuest restores a test-guest snapshot in `ember vmm
// --restore` with every backend: the VMM waits paused, takes an identity
// and a resume in one request, and the guest computes its result from the
// snapshot's memory and registers. The second prefetch run installs the
// working set the first one recorded.
func TestVMMRestoreTestGuest(t *testing.T) {
	dir, g := identitySnapshot(t, 16, 25)
	for _, tt := range []struct {
		backend string
		check   func(t *testing.T, m *api.Metrics)
	}{
		{"copy", nil},
		{"mmap", nil},
		{"uffd", func(t *testing.T, m *api.Metrics) {
			if m.Restore.Faults == 0 {
				t.Errorf("uffd served no faults: %+v", m.Restore)
			}
		}},
		{"prefetch", func(t *testing.T, m *api.Metrics) { // recording: no working set yet
			if m.Restore.PagesFetched != 0 {
				t.Errorf("prefetched %d pages without a working set", m.Restore.PagesFetched)
			}
		}},
		{"prefetch", func(t *testing.T, m *api.Metrics) { // installing what the first run recorded
			if m.Restore.PagesFetched == 0 {
				t.Errorf("prefetch installed nothing: %+v", m.Restore)
			}
		}},
	} {
		t.Run(tt.backend, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			p, err := startVMM(t, "--restore", dir, "--backend", tt.backend)
			if err != nil {
				t.Fatal(err)
			}
			c := api.NewClient(p.sock)
			defer c.Close()
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State != api.StatePaused || info.Source != "restore:"+tt.backend || info.MemoryMiB != 16 {
				t.Fatalf("restored VMM: %+v, want paused restore:%s with 16 MiB", info, tt.backend)
			}
			if tt.backend == "prefetch" { // let the working set (if any) finish installing
				time.Sleep(100 * time.Millisecond)
			}
			id := api.Identity{ID: "vm", Nonce: fmt.Sprintf("%016x", time.Now().UnixNano()) + strings.Repeat("5a", 8)}
			resumed := time.Now()
			if err := c.SetIdentityAndResume(ctx, id); err != nil {
				t.Fatal(err)
			}
			ei, err := c.Wait(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ei.Error != "" || ei.Code != 0 {
				t.Fatalf("guest ended with %+v", ei)
			}
			if err := g.Check(ei.Reports, id.Nonce); err != nil {
				t.Fatal(err)
			}
			m, err := c.Metrics(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if m.Restore == nil || m.Restore.Backend != tt.backend {
				t.Fatalf("restore metrics %+v", m.Restore)
			}
			if m.FirstReportAt.Before(resumed) || m.FirstReportAt.After(time.Now()) {
				t.Errorf("first report at %v, resumed at %v", m.FirstReportAt, resumed)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
			select {
			case err := <-p.exited:
				p.exited <- err
				if err != nil {
					t.Fatalf("ember vmm: %v\n%s", err, p.stderr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("ember vmm did not exit after the guest ended and /wait was answered")
			}
			if _, err := os.Stat(p.sock); !os.IsNotExist(err) {
				t.Errorf("API socket left behind: %v", err)
			}
		})
	}
}

// TestVMMRestoreBadInput: what ember vmm --restore refuses, with a clear
// error and no process or socket left behind.
func TestVMMRestoreBadInput(t *testing.T) {
	dir, _ := identitySnapshot(t, 8, 10)
	plain := plainSnapshot(t)
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"--restore", filepath.Join(t.TempDir(), "nope")}, "no such file"},
		{"not a snapshot", []string{"--restore", t.TempDir()}, "--restore"},
		{"unknown backend", []string{"--restore", dir, "--backend", "floppy"}, "floppy"},
		{"with a test guest", []string{"--restore", dir, "--testguest", "identity"}, "do not combine it with --testguest"},
		{"with memory size", []string{"--restore", dir, "--mem", "8"}, "do not combine it with --mem"},
		{"console", []string{"--restore", dir, "--console", filepath.Join(t.TempDir(), "c")}, "test-guest snapshot"},
		{"neither kind", []string{"--restore", plain}, "neither a Linux"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := startVMM(t, tt.args...)
			if err == nil {
				t.Fatalf("ember vmm %q started a VMM at %s", tt.args, p.sock)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

// plainSnapshot saves a snapshot of a bare machine: neither a Linux VM
// nor a test guest.
func plainSnapshot(t *testing.T) string {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx := context.Background()
	g, err := guestrun.NewIdentityGuest(8<<20, 10)
	if err != nil {
		t.Fatal(err)
	}
	src, err := guestrun.Start(ctx, sys, g.Spec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.PauseWhenReady(ctx, g.Spec); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "plain")
	if _, _, err := snapshot.Save(ctx, src.Machine, dir, snapshot.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}
