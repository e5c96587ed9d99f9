package lab_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
)

// ember is the static ember binary built once for this package's tests.
var ember string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		var release func()
		var err error
		ember, release, err = labtest.Ember(context.Background())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer release()
		return m.Run()
	}())
}

// marker returns a kernel argument unique to this test, which shows up in
// QEMU's command line so that leaks can be found.
func marker(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "ember.test=" + hex.EncodeToString(b)
}

// config returns a lab config for args with a marker and a console log.
func config(t *testing.T, args ...string) (lab.Config, string) {
	m := marker(t)
	return lab.Config{
		Args:       args,
		Ember:      ember,
		Timeout:    2 * time.Minute,
		KernelArgs: []string{m},
		ConsoleLog: filepath.Join(t.TempDir(), "console.log"),
	}, m
}

// checkNoQEMU fails if a QEMU process carrying the marker is still alive.
func checkNoQEMU(t *testing.T, marker string) {
	t.Helper()
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(marker)) && bytes.Contains(b, []byte("qemu")) {
			t.Errorf("QEMU leaked: %s", strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}

// TestRunL1HasKVM boots L1 and checks what the lab exists for: a /dev/kvm
// backed by emulated SVM with nested paging. It also checks argv, env,
// working directory, copied files and mounts.
func TestRunL1HasKVM(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(data, []byte("payload\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	script := `set -e
test -c /dev/kvm && echo kvm=ok
echo $(grep -o -w -E 'svm|npt' /proc/cpuinfo | sort -u)
echo npt=$(cat /sys/module/kvm_amd/parameters/npt)
printf argv=; printf '%s|' "$@"; echo
echo env=$FOO guest=$EMBER_LAB_GUEST pwd=$(pwd)
echo file=$(cat /data/in/file) mode=$(stat -c %a /data/in/file)
grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts && echo cgroup2=ok
grep -q ' /tmp tmpfs ' /proc/mounts && echo tmp=ok
echo year=$(date +%Y)`
	cfg, m := config(t, "sh", "-c", script, "argv0", "a b", `c"d`, "")
	cfg.Env = []string{"FOO=bar baz"}
	cfg.Dir = "/tmp"
	cfg.Files = []lab.File{{HostPath: data, GuestPath: "/data/in/file", Mode: 0o640}}
	var stdout, stderr bytes.Buffer
	cfg.Stdout, cfg.Stderr = &stdout, &stderr
	res, err := lab.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to command %v (L1 uptime %v), total %v", res.Boot, res.GuestBoot, res.Total)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", res.ExitCode, &stdout, &stderr)
	}
	want := []string{
		"kvm=ok", "npt svm", "npt=Y", `argv=a b|c"d||`, "env=bar baz guest=1 pwd=/tmp",
		"file=payload mode=640", "cgroup2=ok", "tmp=ok", fmt.Sprintf("year=%d", time.Now().Year()),
	}
	for _, w := range want {
		if !strings.Contains(stdout.String(), w+"\n") {
			t.Errorf("stdout lacks %q:\n%s\nstderr:\n%s", w, &stdout, &stderr)
		}
	}
	if res.Boot <= 0 || res.Total < res.Boot {
		t.Errorf("implausible timings: %+v", res)
	}
	checkNoQEMU(t, m)
}

func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		script string
		want   int
	}{
		{"exit 7", "exit 7", 7},
		{"killed by SIGKILL", "kill -KILL $$", 128 + 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, m := config(t, "sh", "-c", tc.script)
			res, err := lab.Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != tc.want {
				t.Fatalf("exit status %d, want %d", res.ExitCode, tc.want)
			}
			checkNoQEMU(t, m)
		})
	}
}

// timedWriter records when each write arrived.
type timedWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first map[string]time.Time // first arrival of marker lines
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range []string{"first\n", "second\n"} {
		if _, ok := w.first[l]; !ok && bytes.Contains(p, []byte(l)) {
			w.first[l] = time.Now()
		}
	}
	return w.buf.Write(p)
}

// TestRunOutputStreamsAndIsIntact checks that output arrives while the
// command runs, and that several MiB of binary output on stdout arrive
// intact, next to stderr.
func TestRunOutputStreamsAndIsIntact(t *testing.T) {
	t.Parallel()
	const size = 8 << 20
	script := fmt.Sprintf(`echo first >&2; sleep 2; echo second >&2
head -c %d /dev/urandom > /tmp/blob
sha256sum /tmp/blob >&2
cat /tmp/blob`, size)
	cfg, _ := config(t, "sh", "-c", script)
	var stdout bytes.Buffer
	stderr := &timedWriter{first: map[string]time.Time{}}
	cfg.Stdout, cfg.Stderr = &stdout, stderr
	res, err := lab.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, &stderr.buf)
	}
	if gap := stderr.first["second\n"].Sub(stderr.first["first\n"]); gap < 1500*time.Millisecond {
		t.Errorf("output did not stream: first and second arrived %v apart, want about 2s", gap)
	}
	if stdout.Len() != size {
		t.Fatalf("got %d bytes of stdout, want %d", stdout.Len(), size)
	}
	sum := sha256.Sum256(stdout.Bytes())
	if !strings.Contains(stderr.buf.String(), hex.EncodeToString(sum[:])+"  /tmp/blob") {
		t.Fatalf("checksum mismatch: host %x, guest said:\n%s", sum, &stderr.buf)
	}
}

func TestRunTimeoutKillsL1(t *testing.T) {
	t.Parallel()
	cfg, m := config(t, "sh", "-c", "echo sleeping; sleep 1000")
	cfg.Timeout = 10 * time.Second
	start := time.Now()
	_, err := lab.Run(context.Background(), cfg)
	if !errors.Is(err, lab.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el > cfg.Timeout+5*time.Second {
		t.Errorf("Run returned %v after start; timeout was %v", el, cfg.Timeout)
	}
	if !strings.Contains(err.Error(), "tail of L1 console") || !strings.Contains(err.Error(), "Linux") {
		t.Errorf("error lacks the console tail: %v", err)
	}
	// The monitor dump says where L1's vCPU was: idle, so halted.
	if !strings.Contains(err.Error(), "L1 vCPU state") || !strings.Contains(err.Error(), "RIP=") || !strings.Contains(err.Error(), "HLT=") || !strings.Contains(err.Error(), "(_text+0x") {
		t.Errorf("error lacks L1's registers: %v", err)
	}
	checkNoQEMU(t, m)
}

func TestRunContextCanceled(t *testing.T) {
	t.Parallel()
	cfg, m := config(t, "sleep", "1000")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err := lab.Run(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, lab.ErrTimeout) {
		t.Fatalf("got %v, want the context's error", err)
	}
	checkNoQEMU(t, m)
}

// TestRunFailures covers runs that fail in L1 with a specific error.
func TestRunFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		kargs   []string
		want    error
		console bool // the error must carry the console tail
	}{
		{"command not found", []string{"/no/such/command"}, nil, lab.ErrStart, false},
		// init exits at once: the kernel panics before the agent runs.
		{"boot failure", []string{"true"}, []string{"rdinit=/bin/false"}, lab.ErrBoot, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, m := config(t, tc.args...)
			cfg.KernelArgs = append(cfg.KernelArgs, tc.kargs...)
			_, err := lab.Run(context.Background(), cfg)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.console && !strings.Contains(err.Error(), "Kernel panic") {
				t.Errorf("error lacks the console tail with the panic: %v", err)
			}
			checkNoQEMU(t, m)
		})
	}
}

// TestRunConfigErrors covers failures detected before booting.
func TestRunConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		mod  func(c *lab.Config)
		want error
	}{
		{"no command", func(c *lab.Config) { c.Args = nil }, lab.ErrConfig},
		{"no ember", func(c *lab.Config) { c.Ember = "" }, lab.ErrConfig},
		{"relative guest path", func(c *lab.Config) { c.Files = []lab.File{{HostPath: ember, GuestPath: "x"}} }, lab.ErrConfig},
		{"qemu missing", func(c *lab.Config) { c.QEMU = "/nonexistent/qemu-system-x86_64" }, lab.ErrQEMUMissing},
		{"dynamic ember", func(c *lab.Config) { c.Ember = "/usr/bin/apt-get" }, lab.ErrNotStatic},
		{"unknown kernel package", func(c *lab.Config) { c.KernelPackage = "linux-image-ember-no-such" }, lab.ErrKernelPackage},
		{"busybox missing", func(c *lab.Config) { c.Busybox = "/nonexistent/busybox" }, lab.ErrBusyboxMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := config(t, "true")
			tc.mod(&cfg)
			if _, err := lab.Run(context.Background(), cfg); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCheckStatic(t *testing.T) {
	tests := []struct {
		path string
		want error
	}{
		{ember, nil},
		{"/usr/bin/apt-get", lab.ErrNotStatic},
	}
	for _, tc := range tests {
		if err := lab.CheckStatic(tc.path); !errors.Is(err, tc.want) {
			t.Errorf("CheckStatic(%s) = %v, want %v", tc.path, err, tc.want)
		}
	}
}

// TestRunDynamicBinary runs a dynamically linked host program in L1: its
// interpreter and libraries come along.
func TestRunDynamicBinary(t *testing.T) {
	t.Parallel()
	const prog = "/usr/bin/cpio" // dynamic; installed by make setup
	libs, err := lab.SharedLibraries(prog)
	if err != nil || len(libs) < 2 {
		t.Fatalf("SharedLibraries(%s) = %v, %v", prog, libs, err)
	}
	cfg, m := config(t, "/ember/cpio", "--version")
	cfg.Files = []lab.File{{HostPath: prog, GuestPath: "/ember/cpio"}}
	var stdout, stderr bytes.Buffer
	cfg.Stdout, cfg.Stderr = &stdout, &stderr
	res, err := lab.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(stdout.String(), "GNU cpio") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", res.ExitCode, &stdout, &stderr)
	}
	checkNoQEMU(t, m)
}

// TestRunFrozenL1 stops QEMU (SIGSTOP) while the command runs, as a frozen
// emulator would be, and expects ErrFrozen soon after FreezeTimeout, with
// QEMU gone.
func TestRunFrozenL1(t *testing.T) {
	t.Parallel()
	cfg, m := config(t, "sh", "-c", "echo started; sleep 1000")
	cfg.FreezeTimeout = 6 * time.Second
	started := make(chan struct{})
	cfg.Stdout = writerFunc(func(p []byte) (int, error) {
		if bytes.Contains(p, []byte("started")) {
			select {
			case <-started:
			default:
				close(started)
			}
		}
		return len(p), nil
	})
	errc := make(chan error, 1)
	go func() { _, err := lab.Run(context.Background(), cfg); errc <- err }()
	select {
	case <-started:
	case err := <-errc:
		t.Fatalf("run ended before the command started: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("command did not start")
	}
	pid := qemuPID(t, m)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	select {
	case err := <-errc:
		if !errors.Is(err, lab.ErrFrozen) {
			t.Fatalf("got %v, want ErrFrozen", err)
		}
		if el := time.Since(t0); el > cfg.FreezeTimeout+10*time.Second {
			t.Errorf("froze detected %v after the stop (FreezeTimeout %v)", el, cfg.FreezeTimeout)
		}
	case <-time.After(time.Minute):
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("a frozen L1 was not detected")
	}
	checkNoQEMU(t, m)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// qemuPID finds the QEMU process carrying marker.
func qemuPID(t *testing.T, marker string) int {
	t.Helper()
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(marker)) && bytes.Contains(b, []byte("qemu")) {
			var pid int
			fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
			return pid
		}
	}
	t.Fatal("no QEMU process with the marker")
	return 0
}
