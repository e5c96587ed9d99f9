package labtest

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest/labdemo"
)

// demoBin is labdemo's test binary and demoEmber a static ember, built once.
var demoBin, demoEmber string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "ember-labtest-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		demoEmber, err = BuildEmber(context.Background(), dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		demoBin = filepath.Join(dir, "labdemo.test")
		cmd := exec.Command("go", "test", "-c", "-o", demoBin, "./labdemo")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build labdemo test binary: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// runDemo runs labdemo's test binary with -test.v and extra environment,
// as go test would (in the package directory).
func runDemo(t *testing.T, timeout string, env ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(demoBin, "-test.v", "-test.timeout="+timeout)
	cmd.Dir = "labdemo"
	cmd.Env = append(os.Environ(), append([]string{EmberEnv + "=" + demoEmber, "EMBER_LAB="}, env...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("output lacks %q", l)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

// TestInnerFailureFailsOuter runs labdemo with its deliberately failing
// native test enabled: the host process must fail and show the inner
// failure, while the other tests still pass where they ran.
func TestInnerFailureFailsOuter(t *testing.T) {
	if native, why := NativeKVM(); native {
		t.Skipf("host has native KVM (%s); the lab is not used", why)
	}
	t.Parallel()
	out, code := runDemo(t, "3m", labdemo.FailEnv+"=1")
	if code == 0 {
		t.Errorf("exit status 0; want failure")
	}
	wantLines(t, out,
		"--- PASS: TestHostSide",
		"running 5 native-KVM test(s) in the nested lab",
		"--- PASS: TestNativeKVM",
		"--- PASS: TestNativeTestdata",
		"--- FAIL: TestNativeDeliberateFailure",
		labdemo.FailMarker,
		"labtest: native tests failed in the nested lab",
	)
}

// TestFrozenL1IsReplaced: labdemo freezes its first L1 in TestNativeFreeze;
// labtest must notice (no heartbeat for the freeze timeout), report where
// L1's vCPU was, and run only the tests without a result in a fresh L1, so
// that the run passes with every test reported once.
func TestFrozenL1IsReplaced(t *testing.T) {
	if native, why := NativeKVM(); native {
		t.Skipf("host has native KVM (%s); the lab is not used", why)
	}
	t.Parallel()
	out, code := runDemo(t, "5m", labdemo.FreezeEnv+"=1")
	if code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	wantLines(t, out,
		"running 5 native-KVM test(s) in the nested lab",
		"lab: L1 froze",
		"L1 vCPU state",
		"L1 froze during TestNativeFreeze; running the 4 test(s) without a result in a fresh L1",
		"running 4 native-KVM test(s) in the nested lab: TestNativeFreeze TestNativeTestdata",
		"L1 run 2: not freezing again",
		"--- PASS: TestNativeFreeze",
		"--- PASS: TestNativeTestdata",
	)
	if n := strings.Count(out, "--- PASS: TestNativeKVM"); n != 1 {
		t.Errorf("TestNativeKVM reported %d times; want once (it passed before the freeze)", n)
	}
}

// TestHungInnerTestIsEnded: a native test that hangs is ended by the inner
// -test.timeout (what is left of the host's), with its stacks and L1's
// console tail in the output, and the host run fails.
func TestHungInnerTestIsEnded(t *testing.T) {
	if native, why := NativeKVM(); native {
		t.Skipf("host has native KVM (%s); the lab is not used", why)
	}
	t.Parallel()
	start := time.Now()
	out, code := runDemo(t, "20s", labdemo.HangEnv+"=1")
	if code == 0 {
		t.Errorf("exit status 0; want failure")
	}
	wantLines(t, out, "panic: test timed out", "TestNativeHang", "labtest: tail of L1 console", "labtest: native tests failed in the nested lab")
	// The inner timeout, not the lab's, must have ended it: the panic above
	// says so. Boot time varies with host load, so the bound is loose.
	t.Logf("took %v with a 20s test timeout", time.Since(start))
	if el := time.Since(start); el > 20*time.Second+bootSlack+time.Minute {
		t.Errorf("took %v; want well under %v", el, 20*time.Second+bootSlack+time.Minute)
	}
}

// TestLabUnavailableFailsNativeTests: when the lab cannot run, native tests
// fail with the reason instead of vanishing.
func TestLabUnavailableFailsNativeTests(t *testing.T) {
	if native, why := NativeKVM(); native {
		t.Skipf("host has native KVM (%s); the lab is not used", why)
	}
	t.Parallel()
	out, code := runDemo(t, "3m", "EMBER_LAB_QEMU=/nonexistent/qemu-system-x86_64")
	if code == 0 {
		t.Errorf("exit status 0; want failure")
	}
	wantLines(t, out, "--- PASS: TestHostSide", "--- FAIL: TestNativeKVM", "--- FAIL: TestNativeTestdata", "qemu-system-x86_64 not found")
}

func TestLabOffSkipsNativeTests(t *testing.T) {
	if native, why := NativeKVM(); native {
		t.Skipf("host has native KVM (%s); the lab is not used", why)
	}
	t.Parallel()
	out, code := runDemo(t, "3m", ModeEnv+"=off")
	if code != 0 {
		t.Errorf("exit status %d; want 0", code)
	}
	wantLines(t, out, "--- PASS: TestHostSide", "--- SKIP: TestNativeKVM", "EMBER_LAB=off")
	if strings.Contains(out, "nested lab:") {
		t.Error("the lab ran although EMBER_LAB=off")
	}
}

func TestVirtFlag(t *testing.T) {
	tests := []struct{ file, want string }{
		{"testdata/cpuinfo-pvm", ""},
		{"testdata/cpuinfo-svm", "svm"},
		{"testdata/cpuinfo-vmx", "vmx"},
	}
	for _, tc := range tests {
		got, err := virtFlag(tc.file)
		if err != nil || got != tc.want {
			t.Errorf("virtFlag(%s) = %q, %v; want %q", tc.file, got, err, tc.want)
		}
	}
	if _, err := virtFlag("testdata/none"); err == nil {
		t.Error("missing file gave no error")
	}
}

func TestInnerFlags(t *testing.T) {
	tests := []struct {
		name    string
		natives []string
		run     string
		set     []string // host flags given on the command line
		want    []string
	}{
		{"plain", []string{"TestNativeA"}, "", nil, []string{"-test.run=^(TestNativeA)$", "-test.v=true"}},
		{"not verbose", []string{"TestNativeA"}, "", []string{"-test.v=false"}, []string{"-test.run=^(TestNativeA)$", "-test.v=true"}},
		{"test2json", []string{"TestNativeA"}, "", []string{"-test.v=test2json"}, []string{"-test.run=^(TestNativeA)$", "-test.v=test2json"}},
		{"subtests and passthrough", []string{"TestNativeA", "TestNativeB"}, "Native/sub", []string{"-test.v=true", "-test.count=2", "-test.coverprofile=c.out"},
			[]string{"-test.run=^(TestNativeA|TestNativeB)$/sub", "-test.count=2", "-test.v=true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.String("test.v", "false", "")
			fs.Int("test.count", 1, "")
			fs.String("test.coverprofile", "", "")
			if err := fs.Parse(tc.set); err != nil {
				t.Fatal(err)
			}
			if got := innerFlags(tc.natives, tc.run, fs.Visit); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestProgress follows top-level results in -test.v output written in
// arbitrary pieces.
func TestProgress(t *testing.T) {
	out := "=== RUN   TestNativeA\n--- PASS: TestNativeA (0.01s)\n=== RUN   TestNativeB\n=== RUN   TestNativeB/sub\n" +
		"    --- FAIL: TestNativeB/sub (0.00s)\n--- FAIL: TestNativeB (0.00s)\n\x16=== RUN   TestNativeC\n" +
		"\x16--- SKIP: TestNativeC (0.00s)\n=== RUN   TestNativeD\n    log: --- PASS: TestNativeE (fake)\n"
	var sink bytes.Buffer
	p := newProgress(&sink)
	for i := 0; i < len(out); i += 7 {
		if _, err := p.Write([]byte(out[i:min(i+7, len(out))])); err != nil {
			t.Fatal(err)
		}
	}
	if sink.String() != out {
		t.Errorf("output not passed through: %q", sink.String())
	}
	all := []string{"TestNativeA", "TestNativeB", "TestNativeC", "TestNativeD", "TestNativeE"}
	if got, want := p.left(all), []string{"TestNativeD", "TestNativeE"}; !slices.Equal(got, want) {
		t.Errorf("left = %q, want %q", got, want)
	}
	if got := p.failures(); !slices.Equal(got, []string{"TestNativeB"}) {
		t.Errorf("failures = %q", got)
	}
	if got := p.current(); got != "TestNativeD" {
		t.Errorf("current = %q", got)
	}
}

func TestPassEnv(t *testing.T) {
	in := []string{"HOME=/root", "EMBER_X=1", "EMBER_LAB=force", "EMBER_LAB_EMBER=/e", "GOTRACEBACK=all", "PATH=/bin"}
	want := []string{"EMBER_X=1", "GOTRACEBACK=all"}
	if got := passEnv(in); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestTestdataFiles(t *testing.T) {
	files, err := testdataFiles("testdata", "/pkg/testdata")
	if err != nil {
		t.Fatal(err)
	}
	want := lab.File{HostPath: filepath.Join("testdata", "cpuinfo-svm"), GuestPath: "/pkg/testdata/cpuinfo-svm"}
	if !slices.Contains(files, want) {
		t.Errorf("files %v lack %v", files, want)
	}
	if files, err := testdataFiles("no-such-dir", "/x"); err != nil || len(files) != 0 {
		t.Errorf("missing testdata: %v, %v", files, err)
	}
}

// TestHostNativeKVM checks NativeKVM against the CPU flags of this host.
func TestHostNativeKVM(t *testing.T) {
	native, why := NativeKVM()
	if why == "" {
		t.Fatal("NativeKVM gave no reason")
	}
	if flag, _ := virtFlag("/proc/cpuinfo"); flag == "" && native {
		t.Fatalf("NativeKVM = true (%s) without vmx or svm in /proc/cpuinfo", why)
	}
}
