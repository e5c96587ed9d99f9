package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/internal/ociimage"
	"github.com/embervm/ember/pool"
	"github.com/embervm/ember/vmm/boot"
)

// snapshotProfile makes a snapshot profile as the shim's restore and pool
// sources need it: `ember snapshot create` of a VM booted with the agent
// and spare drive slots, taken once the agent is ready.
func snapshotProfile(t *testing.T, ctx context.Context, ember, dir string, spare int) string {
	t.Helper()
	bc, err := json.Marshal(boot.Config{
		Kernel: kernelPath, Initrd: initrdPath, MemoryMiB: 256, VCPUs: 1, RNG: true, SpareDrives: spare,
		Vsock: &boot.Vsock{GuestCID: 3, UDS: filepath.Join(dir, "profile-vsock.sock")},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, profile := filepath.Join(dir, "boot.json"), filepath.Join(dir, "profile")
	if err := os.WriteFile(cfgPath, bc, 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := exec.CommandContext(ctx, ember, "snapshot", "create", "--config", cfgPath, "--out", profile,
		"--wait-for", "ember-agent ready", "--settle", "2s").CombinedOutput()
	if err != nil {
		t.Fatalf("ember snapshot create: %v\n%s", err, out)
	}
	t.Logf("snapshot profile written in %v", time.Since(start).Round(time.Millisecond))
	return profile
}

// refillDelay holds back the pool's refill after a claim: with L1's one
// vCPU, a replacement restored at once competes with the claimed VM's
// resume and the container's start.
const refillDelay = 3 * time.Second

// poolDaemon is an `ember pool serve` started for the test.
type poolDaemon struct {
	sock, run string
	cmd       *exec.Cmd
	log       *os.File
	client    *pool.Client
}

// startPool serves a pool of size restored VMs of profile (profile name
// "shim") and waits until they are ready.
func startPool(t *testing.T, ctx context.Context, ember, dir, profile string, size int) *poolDaemon {
	t.Helper()
	p := &poolDaemon{sock: filepath.Join(dir, "pool.sock"), run: filepath.Join(dir, "pool-run")}
	cfg, err := json.Marshal(pool.Config{
		RunDir: p.run, StartTimeout: pool.Duration(3 * time.Minute), RefillDelay: pool.Duration(refillDelay),
		Profiles: []pool.Profile{{Name: "shim", Size: size, MemoryMiB: 256, Console: true, IsolateNetwork: true,
			VMMArgs: []string{"--restore", profile, "--backend", "mmap"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "pool.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	if p.log, err = os.Create(filepath.Join(dir, "pool.log")); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(ember, "pool", "serve", "--config", cfgPath, "--socket", p.sock)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.log.Name())
			t.Logf("pool log (tail):\n%s", tail(string(b), 4000))
		}
		p.log.Close()
	})
	p.client = pool.NewClient(p.sock)
	p.waitReady(t, ctx, size)
	return p
}

func (p *poolDaemon) status(t *testing.T, ctx context.Context) pool.ProfileStatus {
	t.Helper()
	st, err := p.client.Status(ctx)
	if err != nil || len(st) != 1 {
		t.Fatalf("pool status: %v %v", st, err)
	}
	return st[0]
}

// waitReady waits until the pool has n ready VMs and none starting.
func (p *poolDaemon) waitReady(t *testing.T, ctx context.Context, n int) pool.ProfileStatus {
	t.Helper()
	start := time.Now()
	for {
		st, err := p.client.Status(ctx)
		if err == nil && len(st) == 1 && st[0].Ready == n && st[0].Starting == 0 {
			return st[0]
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("pool not ready with %d VMs after 3 minutes: %+v %v", n, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vmms lists the pids of live VMM processes with files in the pool's run
// directory.
func (p *poolDaemon) vmms() []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, _ := os.ReadFile(f)
		if !bytes.Contains(b, []byte("vmm\x00")) || !bytes.Contains(b, []byte(p.run+"/")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); bytes.Contains(st, []byte(") Z ")) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// waitOnlyReady waits until the pool is full again and the only VMMs and
// files in its run directory are its ready VMs' (an API socket, a vsock
// socket and a console each): nothing of a claimed VM is left.
func (p *poolDaemon) waitOnlyReady(t *testing.T, ctx context.Context, size int) {
	t.Helper()
	p.waitReady(t, ctx, size)
	deadline := time.Now().Add(20 * time.Second)
	for {
		pids := p.vmms()
		files, _ := os.ReadDir(p.run)
		var names []string
		for _, f := range files {
			names = append(names, f.Name())
		}
		if len(pids) == size && len(files) == 3*size {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool of %d: VMM processes %v, run directory %v", size, pids, names)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// servedLine returns the shim's last "vm: served by SOURCE" log line
// (from the message on), or "".
func (e *env) servedLine(source string) string {
	b, _ := os.ReadFile(e.log.Name())
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if j := strings.Index(lines[i], "vm: served by "+source); j >= 0 {
			l, _, _ := strings.Cut(lines[i][j:], "\" ")
			return l
		}
	}
	return ""
}

// TestNativeShimPool runs containers in VMs claimed from a warm pool
// (backend = "pool"): `ember pool serve` keeps restored VMs of a snapshot
// profile paused, the shim claims one without resuming it, attaches the
// container's rootfs to a spare drive slot, resumes it and re-identifies
// the agent. The pool refills, and after the containers nothing of the
// claimed VMs is left: no VMM process beyond the pool's ready ones, no
// state directory, no socket in the pool's run directory, also when the
// shim was killed (containerd's `shim delete`). Then, with backend =
// "auto" and the pool gone, the restore source serves.
func TestNativeShimPool(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	ember, err := exec.LookPath("ember")
	if err != nil {
		ember = "/bin/ember"
	}
	dir := t.TempDir()
	profile := snapshotProfile(t, ctx, ember, dir, 2)
	t.Cleanup(func() {
		// Registered before containerd's cleanup, so it runs after it.
		if !t.Failed() {
			return
		}
		out, _ := exec.Command("ps", "-o", "pid,stat,args").CombinedOutput()
		t.Logf("ps:\n%s", out)
	})
	start := time.Now()
	p := startPool(t, ctx, ember, dir, profile, 1)
	t.Logf("pool of 1 ready in %v", time.Since(start).Round(time.Millisecond))

	e := startContainerdWith(t, fmt.Sprintf("backend = \"pool\"\npool_socket = %q\npool_profile = \"shim\"", p.sock))
	shimCfg := filepath.Join(e.root, "ember.toml")
	img, err := ociimage.Busybox("/bin/busybox", imageName)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := e.ctrIn(string(img), "images", "import", "-"); err != nil || r.code != 0 {
		t.Fatalf("ctr images import: %v %+v\n%s", err, r, e.logTail())
	}

	if !t.Run("Echo", func(t *testing.T) {
		r := e.must(0, e.run("pooled1", []string{"--rm"}, "sh", "-c", "echo from-pool; hostname")...)
		if !strings.HasPrefix(r.stdout, "from-pool\n") {
			t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
		}
		t.Logf("ctr run --rm in a VM from the pool: %v", r.took.Round(time.Millisecond))
		log, _ := os.ReadFile(e.log.Name())
		if l := e.servedLine("pool"); l == "" || !bytes.Contains(log, []byte("vm: claimed VMM")) {
			t.Fatalf("the VM did not come from the pool:\n%s", e.logTail())
		} else {
			t.Logf("shim: %s", l)
		}
		// The shim claimed it directly, from the pool's ready directory.
		if st := p.status(t, ctx); st.Claimed != 1 || st.Direct != 1 || st.Cold != 0 {
			t.Errorf("pool status after one claim: %+v, want one direct claim", st)
		}
		e.waitNoLeftovers(t)
		p.waitOnlyReady(t, ctx, 1) // refilled; the claimed VMM and its files are gone
	}) {
		t.FailNow()
	}

	t.Run("Pod", func(t *testing.T) {
		pod := []string{"--annotation", "io.kubernetes.cri.sandbox-id=ppod"}
		e.must(0, e.run("ppod-a", append([]string{"-d"}, pod...), "sh", "-c", "while :; do sleep 1; done")...)
		defer e.ctr("containers", "rm", "ppod-a")
		r := e.must(0, e.run("ppod-b", append([]string{"--rm"}, pod...), "echo", "second")...)
		if r.stdout != "second\n" {
			t.Fatalf("second container of a pooled pod: stdout %q stderr %q", r.stdout, r.stderr)
		}
		e.must(0, "task", "kill", "-s", "SIGKILL", "ppod-a")
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(e.must(0, "task", "ls").stdout, "STOPPED") {
			if time.Now().After(deadline) {
				t.Fatal("ppod-a not stopped 30 s after SIGKILL")
			}
			time.Sleep(100 * time.Millisecond)
		}
		e.must(0, "task", "rm", "ppod-a")
		e.must(0, "containers", "rm", "ppod-a")
		if st := p.status(t, ctx); st.Claimed != 2 || st.Direct != 2 || st.Cold != 0 {
			t.Errorf("pool status after the pod: %+v", st)
		}
		e.waitNoLeftovers(t)
		p.waitOnlyReady(t, ctx, 1)
	})

	t.Run("ShimKilled", func(t *testing.T) {
		e.must(0, e.run("pcrash", []string{"-d"}, "sh", "-c", "while :; do sleep 1; done")...)
		defer e.ctr("containers", "rm", "pcrash")
		var shims []int
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, f := range procs {
			if b, _ := os.ReadFile(f); bytes.Contains(b, []byte("containerd-shim-ember-v2")) {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
				shims = append(shims, pid)
			}
		}
		// containerd reports the VMM's pid as the task's.
		var vmm int
		for _, l := range strings.Split(e.must(0, "task", "ls").stdout, "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "pcrash" {
				vmm, _ = strconv.Atoi(f[1])
			}
		}
		if len(shims) != 1 || !slices.Contains(p.vmms(), vmm) {
			t.Fatalf("shims %v, task pid %d, pool VMMs %v; want one shim and the task's VMM among the pool's", shims, vmm, p.vmms())
		}
		syscall.Kill(shims[0], syscall.SIGKILL)
		// containerd notices the dead shim and runs `shim delete`, which
		// must end the claimed VMM (the pool's child, not the shim's).
		e.waitNoLeftovers(t)
		p.waitOnlyReady(t, ctx, 1)
		e.ctr("task", "rm", "pcrash")
		e.must(0, "containers", "rm", "pcrash")
	})

	t.Run("AutoWithoutPool", func(t *testing.T) {
		// The shim reads its configuration at each start: point it at a
		// pool that is not there, with the snapshot profile as fallback.
		cfg, err := os.ReadFile(shimCfg)
		if err != nil {
			t.Fatal(err)
		}
		cfg = bytes.Replace(cfg, []byte(`backend = "pool"`), []byte(fmt.Sprintf("backend = \"auto\"\nsnapshot_profile = %q", profile)), 1)
		cfg = bytes.Replace(cfg, []byte(p.sock), []byte(p.sock+".absent"), 1)
		if err := os.WriteFile(shimCfg, cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		r := e.must(0, e.run("pfallback", []string{"--rm"}, "echo", "fallback")...)
		if r.stdout != "fallback\n" {
			t.Fatalf("stdout %q stderr %q", r.stdout, r.stderr)
		}
		l := e.servedLine("restore")
		if !strings.Contains(l, "daemon unreachable") {
			t.Fatalf("want the restore source after the pool was skipped as unreachable:\n%s", e.logTail())
		}
		t.Logf("shim: %s", l)
		e.waitNoLeftovers(t)
	})
}
