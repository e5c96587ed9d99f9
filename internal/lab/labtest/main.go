package labtest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/internal/lab"
)

// After an L1 freeze (lab.ErrFrozen) the native tests without a result run
// again in a fresh L1: as often as each L1 finishes at least one more test,
// up to maxLabRuns L1s in all, and at most frozenStalls times after an L1
// that finished none (a test that freezes L1 every time).
const (
	maxLabRuns   = 8
	frozenStalls = 2
)

// AttemptEnv is set in the environment of the tests in L1 to the number of
// the L1 they run in: 1, then 2 and on after a freeze.
const AttemptEnv = "EMBER_LAB_ATTEMPT"

// NativePrefix starts the names of tests that need native KVM.
const NativePrefix = "TestNative"

// ModeEnv selects how native tests run: "off", "force" or unset (auto).
const ModeEnv = "EMBER_LAB"

// guestPkgDir is the inner test binary's working directory in L1.
const guestPkgDir = "/ember-test/pkg"

// bootSlack is added to the inner test timeout to bound the whole lab run:
// L1 boots in seconds, and go test kills the host process one minute after
// its -test.timeout.
const bootSlack = 45 * time.Second

// killSlack is the least -test.timeout given to the tests in L1.
const killSlack = 10 * time.Second

// Option configures Main and Run.
type Option func(*options)

type options struct {
	files []lab.File
	cfg   func(*lab.Config)
}

// WithFiles copies extra host files into L1 for the native tests.
func WithFiles(files ...lab.File) Option {
	return func(o *options) { o.files = append(o.files, files...) }
}

// WithConfig lets the package adjust the lab configuration (memory, CPUs,
// modules) before the run.
func WithConfig(f func(*lab.Config)) Option {
	return func(o *options) { o.cfg = f }
}

// Main runs the package's tests, sending TestNative* tests to the nested
// lab when the host cannot run them, and exits with their status; it does
// not return, so deferred calls in its caller do not run (see Run).
func Main(m *testing.M, opts ...Option) {
	os.Exit(Run(m, opts...))
}

// Run is Main for a TestMain with something to clean up (its fixtures):
// it returns the exit status instead of exiting.
//
//	code := labtest.Run(m, labtest.WithFiles(files...))
//	os.RemoveAll(fixtureDir)
//	os.Exit(code)
func Run(m *testing.M, opts ...Option) int {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return run(m, &o, os.Stdout)
}

func run(m *testing.M, o *options, out io.Writer) int {
	start := time.Now()
	if !flag.Parsed() {
		flag.Parse()
	}
	if flagValue("test.list") != "" || InLab() {
		return m.Run()
	}
	mode := os.Getenv(ModeEnv)
	if native, _ := NativeKVM(); native && mode != "force" {
		return m.Run()
	}
	natives, err := listNative(flagValue("test.run"))
	if err != nil {
		fmt.Fprintln(out, err)
		return 1
	}
	// Host part: everything but the native tests.
	skip := "^" + NativePrefix
	if s := flagValue("test.skip"); s != "" {
		skip += "|" + s
	}
	_ = flag.Set("test.skip", skip)
	code := m.Run()
	if len(natives) == 0 {
		return code
	}
	if mode == "off" {
		reportAll(out, natives, "SKIP", ModeEnv+"=off: native-KVM tests not run (this host's KVM cannot run guest kernels)")
		return code
	}
	if err := runInLab(context.Background(), natives, start, o, out); err != nil {
		fmt.Fprintln(out, err)
		return 1
	}
	return code
}

// errInnerFailed means the tests in L1 ran and failed; their output says
// why.
var errInnerFailed = errors.New("labtest: native tests failed in the nested lab")

// innerTimeout returns the -test.timeout for the tests in L1: what is left
// of the host's -test.timeout (10m if unset) after the host tests, at least
// killSlack. go test kills the host process one minute after its timeout,
// so the inner tests must time out (and print their stacks) before that.
func innerTimeout(start time.Time) time.Duration {
	timeout := 10 * time.Minute
	if d, err := time.ParseDuration(flagValue("test.timeout")); err == nil && d > 0 {
		timeout = d
	}
	return max(timeout-time.Since(start), killSlack)
}

// runInLab boots L1 and runs the native tests there, each L1 with what is
// left of the host's test timeout (see innerTimeout; start is when the
// host test binary started). After an L1 freeze it runs the tests that had
// no result yet in a fresh L1 (see maxLabRuns).
func runInLab(ctx context.Context, natives []string, start time.Time, o *options, out io.Writer) error {
	fail := func(names []string, err error) error {
		reportAll(out, names, "FAIL", "cannot run in the nested lab: "+err.Error())
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fail(natives, fmt.Errorf("labtest: %w", err))
	}
	if lab.CheckStatic(self) != nil {
		// A cgo or -race build: lab.Run ships its libraries too.
		fmt.Fprintf(out, "labtest: the test binary is dynamically linked; copying its shared libraries into L1 (CGO_ENABLED=0 avoids this)\n")
	}
	ember, release, err := Ember(ctx)
	if err != nil {
		return fail(natives, err)
	}
	defer release()
	guestBin := path.Join(guestPkgDir, filepath.Base(self))
	files := append([]lab.File{{HostPath: self, GuestPath: guestBin}}, o.files...)
	td, err := testdataFiles("testdata", path.Join(guestPkgDir, "testdata"))
	if err != nil {
		return fail(natives, err)
	}
	files = append(files, td...)

	prog := newProgress(out)
	cfg := lab.Config{
		Dir:        guestPkgDir,
		Files:      files,
		Ember:      ember,
		Stdout:     prog,
		Stderr:     out,
		ConsoleLog: os.Getenv("EMBER_LAB_CONSOLE"),
		QEMU:       os.Getenv("EMBER_LAB_QEMU"),
	}
	cfg.CPUs, _ = strconv.Atoi(os.Getenv("EMBER_LAB_CPUS"))
	cfg.MemoryMiB, _ = strconv.Atoi(os.Getenv("EMBER_LAB_MEM"))
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	left, stalls := natives, 0
	for attempt := 1; ; attempt++ {
		timeout := innerTimeout(start)
		cfg.Args = append([]string{guestBin}, innerFlags(left, flagValue("test.run"), flag.Visit)...)
		cfg.Args = append(cfg.Args, "-test.timeout="+timeout.String())
		cfg.Env = append(passEnv(os.Environ()), AttemptEnv+"="+strconv.Itoa(attempt))
		cfg.Timeout = timeout + bootSlack
		fmt.Fprintf(out, "labtest: running %d native-KVM test(s) in the nested lab: %s\n", len(left), strings.Join(left, " "))
		res, err := lab.Run(ctx, cfg)
		if errors.Is(err, lab.ErrFrozen) && ctx.Err() == nil {
			// The emulator froze under L1 (not the tests: they ran
			// inside it). Carry on with the tests that have no result.
			now := prog.left(left)
			if len(now) == len(left) {
				stalls++
			}
			switch {
			case len(now) == 0:
				// Every test reported before the freeze.
				res, err = nil, nil
			case stalls > frozenStalls || attempt >= maxLabRuns:
				return fail(now, fmt.Errorf("%w\nlabtest: gave up after %d L1 runs", err, attempt))
			case flagValue("test.failfast") == "true" && len(prog.failures()) > 0:
				return fail(now, err)
			default:
				fmt.Fprintf(out, "labtest: %v\nlabtest: L1 froze during %s; running the %d test(s) without a result in a fresh L1\n",
					err, prog.current(), len(now))
				left = now
				continue
			}
		}
		if err != nil {
			return fail(prog.left(left), err)
		}
		if res != nil {
			fmt.Fprintf(out, "labtest: nested lab: exit %d, boot %v, total %v\n",
				res.ExitCode, res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond))
			if res.ExitCode != 0 {
				fmt.Fprintf(out, "labtest: tail of L1 console:\n%s\n", lastLines(res.Console, 25))
				return fmt.Errorf("%w (exit status %d)", errInnerFailed, res.ExitCode)
			}
		}
		if f := prog.failures(); len(f) > 0 {
			// An L1 that froze later had run these.
			return fmt.Errorf("%w: %s", errInnerFailed, strings.Join(f, " "))
		}
		return nil
	}
}

// listNative lists the package's top-level native tests selected by the
// -test.run pattern run (its first slash-separated element), by running
// this test binary with -test.list.
func listNative(run string) ([]string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	outb, err := exec.Command(self, "-test.list", "^"+NativePrefix).Output()
	if err != nil {
		return nil, fmt.Errorf("labtest: list native tests: %w", err)
	}
	var sel *regexp.Regexp
	if top, _, _ := strings.Cut(run, "/"); top != "" {
		if sel, err = regexp.Compile(top); err != nil {
			return nil, fmt.Errorf("labtest: bad -test.run: %w", err)
		}
	}
	var names []string
	for _, n := range strings.Fields(string(outb)) {
		if strings.HasPrefix(n, NativePrefix) && (sel == nil || sel.MatchString(n)) {
			names = append(names, n)
		}
	}
	return names, nil
}

// innerFlags returns the flags for the test binary in L1: the selected
// native tests (with the subtest part of the host's -test.run pattern run),
// and those of the host's own test flags, visited by visit, that make
// sense there.
func innerFlags(natives []string, run string, visit func(func(*flag.Flag))) []string {
	quoted := make([]string, len(natives))
	for i, n := range natives {
		quoted[i] = regexp.QuoteMeta(n)
	}
	sel := "^(" + strings.Join(quoted, "|") + ")$"
	if _, sub, ok := strings.Cut(run, "/"); ok {
		sel += "/" + sub
	}
	args := []string{"-test.run=" + sel}
	verbose := false
	pass := map[string]bool{"test.v": true, "test.count": true, "test.failfast": true,
		"test.short": true, "test.parallel": true, "test.cpu": true, "test.paniconexit0": true, "test.shuffle": true}
	visit(func(f *flag.Flag) {
		if f.Name == "test.v" && f.Value.String() == "false" {
			return
		}
		if pass[f.Name] {
			args = append(args, "-"+f.Name+"="+f.Value.String())
			verbose = verbose || f.Name == "test.v"
		}
	})
	if !verbose {
		// Result lines tell which tests to run again after a freeze;
		// go test shows a passing package's output only with -v anyway.
		args = append(args, "-test.v=true")
	}
	return args
}

// passEnv selects the host variables passed to the tests in L1.
func passEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == ModeEnv || k == "EMBER_LAB_CONSOLE" || k == "EMBER_LAB_QEMU" || k == EmberEnv {
			continue
		}
		if strings.HasPrefix(k, "EMBER_") || k == "GOTRACEBACK" || k == "GODEBUG" {
			out = append(out, kv)
		}
	}
	return out
}

// testdataFiles lists the regular files under dir (if it exists) as lab
// files placed under guestDir.
func testdataFiles(dir, guestDir string) ([]lab.File, error) {
	var files []lab.File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return fs.SkipAll
			}
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, lab.File{HostPath: p, GuestPath: path.Join(guestDir, filepath.ToSlash(rel))})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("labtest: testdata: %w", err)
	}
	return files, nil
}

// reportAll prints a "--- FAIL" or "--- SKIP" result line for each test, in
// the format go test and test2json understand, so that no native test
// disappears silently.
func reportAll(out io.Writer, names []string, verdict, reason string) {
	for _, n := range names {
		fmt.Fprintf(out, "--- %s: %s (0.00s)\n    labtest: %s\n", verdict, n, strings.ReplaceAll(reason, "\n", "\n    "))
	}
	if verdict == "FAIL" {
		fmt.Fprintln(out, "FAIL")
	}
}

func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

// lastLines returns the last n lines of s, indented.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
