package vm

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/pool"
	"github.com/embervm/ember/shim/config"
)

// fakeVMMEnv makes the test binary a stand-in for a pooled VMM: a process
// that is not the VM's (its "pool" is the test) and that carries the API
// socket's path on its command line, as `ember vmm --api-sock` does.
const fakeVMMEnv = "EMBER_VM_TEST_FAKE_VMM"

func TestMain(m *testing.M) {
	if os.Getenv(fakeVMMEnv) != "" {
		// Until killed. Not select{}: with no other goroutine the runtime
		// calls that a deadlock and exits, which made these tests flaky.
		for {
			time.Sleep(time.Hour)
		}
	}
	os.Exit(m.Run())
}

// fakeClaim starts a fake pooled VMM whose files live in a "pool run
// directory" and returns the claim the pool would answer; exited is
// closed once the test (its "pool") has reaped it.
func fakeClaim(t *testing.T) (cl *pool.Claim, exited chan struct{}) {
	t.Helper()
	run := t.TempDir()
	cl = &pool.Claim{ID: "abc", Socket: filepath.Join(run, "abc.sock"), Vsock: filepath.Join(run, "abc.sock.vsock"),
		Console: filepath.Join(run, "abc.console"), Source: "pool"}
	for _, p := range []string{cl.Socket, cl.Vsock, cl.Console} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "--", "vmm", "--api-sock", cl.Socket)
	cmd.Env = append(os.Environ(), fakeVMMEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cl.PID = cmd.Process.Pid
	exited = make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	// Wait until the child runs the test binary (not the pre-exec fork).
	deadline := time.Now().Add(10 * time.Second)
	for !isVMM(cl.PID, cl.Socket) {
		if time.Now().After(deadline) {
			t.Fatal("fake VMM did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cl, exited
}

func newTestVM(t *testing.T) *VM {
	dir := t.TempDir()
	return &VM{ID: "vm1", Dir: dir, done: make(chan struct{}),
		vsock: filepath.Join(dir, vsockSocket), console: filepath.Join(dir, consoleLog)}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestClaimedVMMKill: Kill ends a VMM claimed from the pool through its
// pidfd and leaves nothing of it: its sockets in the pool's run directory
// go, its console becomes the state directory's.
func TestClaimedVMMKill(t *testing.T) {
	cl, exited := fakeClaim(t)
	v := newTestVM(t)
	if err := v.adopt(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	if v.Pid() != cl.PID || v.vsock != cl.Vsock || !exists(filepath.Join(v.Dir, ClaimFile)) || !exists(filepath.Join(v.Dir, PidFile)) {
		t.Fatalf("adopted VM: pid %d vsock %s; want the claim's, with %s and %s", v.Pid(), v.vsock, ClaimFile, PidFile)
	}
	v.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("Kill left the claimed VMM running")
	}
	select {
	case <-v.Done():
	default:
		t.Fatal("VM not done after Kill")
	}
	for _, p := range []string{cl.Socket, cl.Vsock, cl.Console, filepath.Join(v.Dir, ClaimFile), filepath.Join(v.Dir, PidFile)} {
		if exists(p) {
			t.Errorf("%s left after Kill", p)
		}
	}
	if !exists(filepath.Join(v.Dir, consoleLog)) {
		t.Error("the claimed VMM's console did not move to the state directory")
	}
}

// TestClaimedVMMExit: a claimed VMM that dies is noticed (its pidfd), and
// the VM reports ErrDied.
func TestClaimedVMMExit(t *testing.T) {
	cl, _ := fakeClaim(t)
	v := newTestVM(t)
	if err := v.adopt(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	defer v.Kill()
	syscall.Kill(cl.PID, syscall.SIGKILL)
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the claimed VMM's exit went unnoticed")
	}
	if !errors.Is(v.Err(), ErrDied) {
		t.Fatalf("Err() = %v, want ErrDied", v.Err())
	}
}

// TestAdoptChecksTheProcess: a claim whose pid does not run the claimed
// VMM (it died and the pid was reused) is refused, and nothing is
// recorded or killed.
func TestAdoptChecksTheProcess(t *testing.T) {
	cl, exited := fakeClaim(t)
	other := *cl
	run := t.TempDir()
	other.Socket, other.Vsock, other.Console = filepath.Join(run, "other.sock"), filepath.Join(run, "other.vsock"), filepath.Join(run, "other.console")
	v := newTestVM(t)
	if err := v.adopt(context.Background(), &other); !errors.Is(err, ErrDied) {
		t.Fatalf("adopt of a process that is not the claimed VMM: %v, want ErrDied", err)
	}
	v.Kill()
	if exists(filepath.Join(v.Dir, ClaimFile)) || exists(filepath.Join(v.Dir, PidFile)) {
		t.Error("a refused claim was recorded")
	}
	select {
	case <-exited:
		t.Fatal("a process that is not the VM's was killed")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestAdoptOfExitedVMM: a claimed VMM that exited before the shim could
// adopt it is refused, and what it left in the pool's run directory is
// removed (its console kept in the state directory): nobody else would.
func TestAdoptOfExitedVMM(t *testing.T) {
	cl, exited := fakeClaim(t)
	syscall.Kill(cl.PID, syscall.SIGKILL)
	<-exited
	v := newTestVM(t)
	if err := v.adopt(context.Background(), cl); !errors.Is(err, ErrDied) {
		t.Fatalf("adopt of an exited VMM: %v, want ErrDied", err)
	}
	v.Kill()
	for _, p := range []string{cl.Socket, cl.Vsock, cl.Console} {
		if exists(p) {
			t.Errorf("%s left after a refused claim", p)
		}
	}
	if !exists(filepath.Join(v.Dir, consoleLog)) {
		t.Error("the exited VMM's console was not kept in the state directory")
	}
}

// TestCleanupAfterShimCrash: `shim delete` (Cleanup) ends the VMM recorded
// in a dead shim's state directory, the pool's VMM included, and removes
// what it left; a recorded pid that runs something else is left alone.
func TestCleanupAfterShimCrash(t *testing.T) {
	for _, tc := range []struct {
		name      string
		recordPID bool // the pid file names the fake VMM
		socket    func(cl *pool.Claim) string
		killed    bool
	}{
		{"claimed VMM", true, func(cl *pool.Claim) string { return cl.Socket }, true},
		{"pid reused by another process", true, func(*pool.Claim) string { return "/run/elsewhere.sock" }, false},
		{"no pid file", false, func(cl *pool.Claim) string { return cl.Socket }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, exited := fakeClaim(t)
			v := newTestVM(t)
			if err := v.adopt(context.Background(), cl); err != nil {
				t.Fatal(err)
			}
			v.pidfd.Close() // the shim crashes: nothing of v is used again
			rec := *v.claim
			rec.Socket = tc.socket(cl)
			v.claim = &rec
			if err := os.WriteFile(filepath.Join(v.Dir, ClaimFile), mustJSON(t, rec), 0o600); err != nil {
				t.Fatal(err)
			}
			if !tc.recordPID {
				os.Remove(filepath.Join(v.Dir, PidFile))
			}
			Cleanup(v.Dir, config.Config{StateDir: t.TempDir()})
			select {
			case <-exited:
				if !tc.killed {
					t.Fatal("Cleanup killed a process that is not the VM's")
				}
			case <-time.After(map[bool]time.Duration{true: 10 * time.Second, false: 200 * time.Millisecond}[tc.killed]):
				if tc.killed {
					t.Fatal("Cleanup left the claimed VMM running")
				}
			}
			if exists(v.Dir) {
				t.Error("state directory left")
			}
			if tc.killed && (exists(cl.Socket) || exists(cl.Vsock) || exists(cl.Console)) {
				t.Error("the claimed VMM's files were left in the pool's run directory")
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
