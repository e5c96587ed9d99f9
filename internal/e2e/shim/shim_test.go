package shim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/ociimage"
)

const (
	runtimeName = "io.containerd.ember.v2"
	imageName   = "docker.io/library/ember-busybox:e2e"
	namespace   = "e2e"
)

// env is a containerd started for the test, with its own socket and dirs.
type env struct {
	t        *testing.T
	root     string
	sock     string
	stateDir string // the shim's state_dir (one directory per VM)
	cacheDir string // the shim's rootfs cache
	log      *os.File
	cmd      *exec.Cmd
	cdCfg    string // containerd's configuration file
	envv     []string
	ns       string // ctr's namespace
}

func startContainerd(t *testing.T) *env { return startContainerdWith(t, `backend = "boot"`) }

// startContainerdWith starts containerd with the shim configured by
// backendCfg (the backend and its settings) and the CRI plugins disabled.
func startContainerdWith(t *testing.T, backendCfg string) *env {
	return startContainerdCfg(t, backendCfg, nil)
}

// startContainerdCfg starts containerd with the shim configured by
// backendCfg. Without cri, containerd's CRI plugins are disabled; with it,
// they run with the configuration cri returns (TOML for containerd's
// config, given the test's root directory, where cri may write files).
func startContainerdCfg(t *testing.T, backendCfg string, cri func(root string) string) *env {
	root, err := os.MkdirTemp("", "e2e-cd-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, root: root, sock: filepath.Join(root, "containerd.sock"), ns: namespace,
		stateDir: filepath.Join(root, "ember"), cacheDir: filepath.Join(root, "ember-cache")}
	shimCfg := fmt.Sprintf(`ember = "/bin/ember"
kernel = %q
initrd = %q
memory_mib = 256
vcpus = 1
state_dir = %q
cache_dir = %q
agent_timeout = "3m"
keep_console = true
%s
`, kernelPath, initrdPath, e.stateDir, e.cacheDir, backendCfg)
	if ember, err := exec.LookPath("ember"); err == nil && ember != "/bin/ember" {
		shimCfg = strings.Replace(shimCfg, `"/bin/ember"`, fmt.Sprintf("%q", ember), 1)
	}
	shimCfgPath := filepath.Join(root, "ember.toml")
	disabled, criCfg := `"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"`, ""
	if cri != nil {
		disabled, criCfg = "", cri(root)
	}
	cdCfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = [%s]
[grpc]
  address = %q
[ttrpc]
  address = %q
%s`, filepath.Join(root, "root"), filepath.Join(root, "state"), disabled, e.sock, e.sock+".ttrpc", criCfg)
	cdCfgPath := filepath.Join(root, "containerd.toml")
	for p, s := range map[string]string{shimCfgPath: shimCfg, cdCfgPath: cdCfg} {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.envv = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "EMBER_SHIM_CONFIG="+shimCfgPath)
	if e.log, err = os.Create(filepath.Join(root, "containerd.log")); err != nil {
		t.Fatal(err)
	}
	e.cdCfg = cdCfgPath
	t.Cleanup(e.stop)
	e.launch(t)
	stopWatch := make(chan struct{})
	t.Cleanup(func() { close(stopWatch) })
	go e.watchdog(stopWatch)
	return e
}

// launch starts the containerd daemon with the env's configuration and
// waits until ctr reaches it.
func (e *env) launch(t *testing.T) {
	t.Helper()
	e.cmd = exec.Command(filepath.Join(binDir, "containerd"), "--config", e.cdCfg, "--log-level", "debug")
	e.cmd.Env = e.envv
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	start := time.Now()
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for {
		// ctr's own failures come back as a non-zero code, not an error.
		if r, err := e.ctr("version"); err == nil && r.code == 0 {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("containerd did not come up in a minute\n%s", e.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("containerd up in %v", time.Since(start).Round(time.Millisecond))
}

func (e *env) stop() {
	if e.t.Failed() {
		e.t.Logf("containerd log (tail):\n%s", e.logTail())
		consoles, _ := filepath.Glob(filepath.Join(e.stateDir, "consoles", "*.log"))
		for _, c := range consoles {
			b, _ := os.ReadFile(c)
			e.t.Logf("guest console %s (tail):\n%s", filepath.Base(c), tail(string(b), 3000))
		}
	}
	e.cmd.Process.Kill()
	e.cmd.Wait()
	e.log.Close()
	// Leave nothing mounted behind in the lab's /tmp.
	exec.Command("sh", "-c", "grep "+e.root+" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r umount -l").Run()
	os.RemoveAll(e.root)
}

// watchdog prints, every 30 s, what the VMs and containerd are doing, so
// that a hung run shows where it hangs.
func (e *env) watchdog(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(30 * time.Second):
		}
		fmt.Fprintf(os.Stderr, "--- watchdog: containerd log tail:\n%s\n", tail(e.logTail(), 1500))
		logs, _ := filepath.Glob(filepath.Join(e.stateDir, "*", "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			fmt.Fprintf(os.Stderr, "--- watchdog: %s:\n%s\n", l, tail(string(b), 1500))
		}
		out, _ := exec.Command("ps", "-o", "pid,stat,args").CombinedOutput()
		fmt.Fprintf(os.Stderr, "--- watchdog: ps:\n%s\n", out)
	}
}

func (e *env) logTail() string {
	b, _ := os.ReadFile(e.log.Name())
	return tail(string(b), 6000)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// ctrIn runs ctr with stdin.
func (e *env) ctrIn(stdin string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "ctr"), append([]string{"--address", e.sock, "--namespace", e.ns}, args...)...)
	cmd.Env = e.envv
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	start := time.Now()
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
		err = nil
	}
	return r, err
}

func (e *env) ctr(args ...string) (result, error) { return e.ctrIn("", args...) }

// must runs ctr and fails the test unless it exits with want.
func (e *env) must(want int, args ...string) result {
	e.t.Helper()
	r, err := e.ctr(args...)
	if err != nil {
		e.t.Fatalf("ctr %v: %v", args, err)
	}
	if r.code != want {
		e.t.Fatalf("ctr %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, r.code, want, r.stdout, r.stderr)
	}
	return r
}

func (e *env) run(id string, extra []string, argv ...string) []string {
	args := append([]string{"run", "--runtime", runtimeName}, extra...)
	return append(append(args, imageName, id), argv...)
}

// cachedImages lists the rootfs cache.
func (e *env) cachedImages() map[string]time.Time {
	m := map[string]time.Time{}
	files, _ := filepath.Glob(filepath.Join(e.cacheDir, "*.ext4"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			m[filepath.Base(f)] = st.ModTime()
		}
	}
	return m
}

// leftovers lists VM state directories, VMM and shim processes.
func (e *env) leftovers() []string {
	var out []string
	dirs, _ := os.ReadDir(e.stateDir)
	for _, d := range dirs {
		if d.Name() != "consoles" {
			out = append(out, "state dir "+d.Name())
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		cmdline := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.Contains(cmdline, "containerd-shim-ember-v2") || (strings.Contains(cmdline, " vmm ") && strings.Contains(cmdline, e.stateDir)) {
			out = append(out, "process "+filepath.Base(filepath.Dir(p))+": "+cmdline)
		}
	}
	return out
}

func (e *env) waitNoLeftovers(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		l := e.leftovers()
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("left behind after --rm:\n%s", strings.Join(l, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNativeShim runs containers through containerd and the ember shim.
func TestNativeShim(t *testing.T) {
	e := startContainerd(t)
	img, err := ociimage.Busybox("/bin/busybox", imageName)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if r, err := e.ctrIn(string(img), "images", "import", "-"); err != nil || r.code != 0 {
		t.Fatalf("ctr images import: %v %+v\n%s", err, r, e.logTail())
	}
	t.Logf("image imported in %v", time.Since(start).Round(time.Millisecond))

	ok := t.Run("echo", func(t *testing.T) {
		r := e.must(0, e.run("echo1", []string{"--rm"}, "echo", "hello")...)
		if r.stdout != "hello\n" {
			t.Fatalf("stdout %q, want %q (stderr %q)", r.stdout, "hello\n", r.stderr)
		}
		t.Logf("ctr run --rm echo hello (first run, builds the rootfs image): %v", r.took.Round(time.Millisecond))
	})
	if !ok {
		t.FailNow()
	}
	cached := e.cachedImages()
	if len(cached) != 1 {
		t.Errorf("rootfs cache after the first run: %v, want one image", cached)
	}
	t.Run("NoLeftovers", func(t *testing.T) { e.waitNoLeftovers(t) })

	t.Run("CachedRootfs", func(t *testing.T) {
		r := e.must(0, e.run("echo2", []string{"--rm"}, "echo", "again")...)
		if r.stdout != "again\n" {
			t.Fatalf("stdout %q", r.stdout)
		}
		t.Logf("second ctr run --rm (cached rootfs): %v", r.took.Round(time.Millisecond))
		now := e.cachedImages()
		if len(now) != 1 {
			t.Fatalf("rootfs cache %v, want the one image", now)
		}
		for k, mt := range cached {
			if !now[k].Equal(mt) {
				t.Errorf("cached image %s rebuilt", k)
			}
		}
	})

	t.Run("ExitCode", func(t *testing.T) {
		r := e.must(3, e.run("exit3", []string{"--rm"}, "sh", "-c", "exit 3")...)
		t.Logf("exit 3 in %v", r.took.Round(time.Millisecond))
	})

	t.Run("Stderr", func(t *testing.T) {
		r := e.must(0, e.run("stderr1", []string{"--rm"}, "sh", "-c", "echo out; echo err >&2")...)
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
		}
	})

	t.Run("Stdin", func(t *testing.T) {
		r, err := e.ctrIn("piped line 1\npiped line 2\n", e.run("stdin1", []string{"--rm"}, "sh", "-c", "cat; echo done")...)
		if err != nil || r.code != 0 {
			t.Fatalf("%v %+v", err, r)
		}
		if want := "piped line 1\npiped line 2\ndone\n"; r.stdout != want {
			t.Fatalf("stdout %q, want %q", r.stdout, want)
		}
	})

	t.Run("ExecAndKill", func(t *testing.T) {
		e.must(0, e.run("k1", []string{"-d"}, "sh", "-c", "trap '' TERM; echo started; while :; do sleep 1; done")...)
		defer e.ctr("containers", "rm", "k1")
		r := e.must(0, "task", "exec", "--exec-id", "x1", "k1", "sh", "-c", "echo from exec; exit 0")
		if r.stdout != "from exec\n" {
			t.Errorf("exec stdout %q", r.stdout)
		}
		t.Logf("ctr task exec: %v", r.took.Round(time.Millisecond))
		e.must(5, "task", "exec", "--exec-id", "x2", "k1", "sh", "-c", "exit 5")
		r = e.must(0, "task", "ps", "k1")
		if strings.Count(r.stdout, "\n") < 2 {
			t.Errorf("task ps: %q", r.stdout)
		}
		// SIGTERM is ignored (a hung container); SIGKILL ends it.
		e.must(0, "task", "kill", "-s", "SIGTERM", "k1")
		time.Sleep(time.Second)
		if r := e.must(0, "task", "ls"); !strings.Contains(r.stdout, "RUNNING") {
			t.Fatalf("after SIGTERM: %s", r.stdout)
		}
		start := time.Now()
		e.must(0, "task", "kill", "-s", "SIGKILL", "k1")
		for {
			r := e.must(0, "task", "ls")
			if strings.Contains(r.stdout, "STOPPED") {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("not stopped 30 s after SIGKILL: %s", r.stdout)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("SIGKILL → STOPPED in %v", time.Since(start).Round(time.Millisecond))
		e.must(0, "task", "rm", "k1")
		e.must(0, "containers", "rm", "k1")
		e.waitNoLeftovers(t)
	})

	t.Run("Terminal", func(t *testing.T) {
		// ctr -t needs a terminal of its own: give it a pseudo-terminal.
		ptmx, pts, err := openPTY()
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		cmd := exec.Command(filepath.Join(binDir, "ctr"), append([]string{"--address", e.sock, "--namespace", namespace},
			e.run("tty1", []string{"--rm", "-t"}, "sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty")...)...)
		cmd.Env = e.envv
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pts.Close()
		out := make(chan string)
		go func() { b, _ := io.ReadAll(ptmx); out <- string(b) }()
		err = cmd.Wait()
		ptmx.Close()
		got := <-out
		if err != nil || !strings.Contains(got, "is-a-tty") {
			t.Fatalf("ctr run -t: %v, output %q", err, got)
		}
	})

	t.Run("LogURI", func(t *testing.T) {
		logFile := filepath.Join(e.root, "c.log")
		e.must(0, e.run("log1", []string{"--rm", "--log-uri", "file://" + logFile}, "sh", "-c", "echo to-log")...)
		b, err := os.ReadFile(logFile)
		if err != nil || !strings.Contains(string(b), "to-log") {
			t.Fatalf("log file: %q %v", b, err)
		}
	})

	t.Run("Pod", func(t *testing.T) {
		// Containers of one pod share its VM: the first boots it with its
		// rootfs as a boot drive, the others attach theirs to spare drive
		// slots of the running VM, and a slot freed by Delete is reused.
		pod := []string{"--annotation", "io.kubernetes.cri.sandbox-id=pod1"}
		e.must(0, e.run("pod1-a", append([]string{"-d"}, pod...), "sh", "-c", "echo first > /marker; while :; do sleep 1; done")...)
		defer e.ctr("containers", "rm", "pod1-a")
		for i, id := range []string{"pod1-b", "pod1-c"} {
			r := e.must(0, e.run(id, append([]string{"--rm"}, pod...), "sh", "-c", "test ! -e /marker && echo second-$(cat /etc/hostname)")...)
			if !strings.HasPrefix(r.stdout, "second-") {
				t.Fatalf("container %d in the pod: stdout %q stderr %q", i+2, r.stdout, r.stderr)
			}
			t.Logf("ctr run --rm %s in the running pod VM (spare drive slot): %v", id, r.took.Round(time.Millisecond))
		}
		dirs, _ := os.ReadDir(e.stateDir)
		vms := 0
		for _, d := range dirs {
			if d.Name() != "consoles" {
				vms++
			}
		}
		if vms != 1 {
			t.Errorf("%d VM state directories for one pod", vms)
		}
		e.must(0, "task", "kill", "-s", "SIGKILL", "pod1-a")
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(e.must(0, "task", "ls").stdout, "STOPPED") {
			if time.Now().After(deadline) {
				t.Fatal("pod1-a not stopped 30 s after SIGKILL")
			}
			time.Sleep(100 * time.Millisecond)
		}
		e.must(0, "task", "rm", "pod1-a")
		e.must(0, "containers", "rm", "pod1-a")
		e.waitNoLeftovers(t)
	})

	t.Run("FinalNoLeftovers", func(t *testing.T) { e.waitNoLeftovers(t) })
}

// openPTY opens a pseudo-terminal pair.
func openPTY() (ptmx, pts *os.File, err error) {
	ptmx, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptmx.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptmx.Close()
		return nil, nil, err
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		return nil, nil, err
	}
	return ptmx, pts, nil
}
