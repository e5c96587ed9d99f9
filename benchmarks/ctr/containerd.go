package ctrbench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/boot"
)

// ErrContainerd means containerd did not start or answer.
var ErrContainerd = errors.New("ctrbench: containerd")

// Namespace is the containerd namespace the benchmark uses.
const Namespace = "ember-bench"

// containerd is a containerd daemon started for one run, with its own
// socket and directories under root.
type containerd struct {
	root string
	sock string
	bin  string // directory with containerd, ctr and the shims
	env  []string
	// paths and profile (the restore source's snapshot profile, once
	// written) make the shim's configuration.
	paths   Paths
	profile string
	pool    *warmPool // for SourcePool
	cmd     *exec.Cmd
	log     *os.File
}

// shimConfig is the ember shim's configuration for the run: VMs from
// backend (boot or restore, with the snapshot profile).
func shimConfig(p Paths, root, backend, profile, poolSocket string) string {
	cfg := fmt.Sprintf(`ember = %q
kernel = %q
initrd = %q
memory_mib = 256
vcpus = 1
backend = %q
state_dir = %q
cache_dir = %q
agent_timeout = "3m"
`, p.Ember, p.Kernel, p.Initrd, backend, filepath.Join(root, "ember"), filepath.Join(root, "ember-cache"))
	if profile != "" {
		cfg += fmt.Sprintf("snapshot_profile = %q\n", profile)
	}
	if poolSocket != "" {
		cfg += fmt.Sprintf("pool_socket = %q\npool_profile = %q\n", poolSocket, poolProfile)
	}
	return cfg
}

// startContainerd starts containerd (CRI disabled) on a socket under a new
// directory and waits until ctr reaches it.
func startContainerd(ctx context.Context, p Paths) (*containerd, error) {
	root, err := os.MkdirTemp("", "ember-ctrbench-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrContainerd, err)
	}
	c := &containerd{root: root, sock: filepath.Join(root, "containerd.sock"), bin: p.BinDir, paths: p}
	cdCfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(root, "root"), filepath.Join(root, "state"), c.sock, c.sock+".ttrpc")
	files := map[string]string{"containerd.toml": cdCfg, "ember.toml": shimConfig(p, root, SourceBoot, "", "")}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(s), 0o644); err != nil {
			c.cleanup()
			return nil, fmt.Errorf("%w: %w", ErrContainerd, err)
		}
	}
	c.env = append(os.Environ(), "PATH="+p.BinDir+":"+os.Getenv("PATH"),
		"EMBER_SHIM_CONFIG="+filepath.Join(root, "ember.toml"))
	if c.log, err = os.Create(filepath.Join(root, "containerd.log")); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("%w: %w", ErrContainerd, err)
	}
	c.cmd = exec.Command(filepath.Join(p.BinDir, "containerd"), "--config", filepath.Join(root, "containerd.toml"))
	c.cmd.Env = c.env
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("%w: %w", ErrContainerd, err)
	}
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if r, err := c.ctr(ctx, "", "version"); err == nil && r.Code == 0 {
			return c, nil
		}
		if time.Since(start) > time.Minute || ctx.Err() != nil {
			tail := c.logTail()
			c.stop()
			return nil, fmt.Errorf("%w: not up after a minute\n%s", ErrContainerd, tail)
		}
	}
}

// result is one ctr invocation's outcome.
type result struct {
	Stdout, Stderr string
	Code           int
	Took           time.Duration
}

// ctr runs ctr against the daemon with stdin.
func (c *containerd) ctr(ctx context.Context, stdin string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "ctr"), append([]string{"--address", c.sock, "--namespace", Namespace}, args...)...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	r := result{Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code, err = ee.ExitCode(), nil
	}
	return r, err
}

// configure points the shim's configuration at source; each container's
// shim reads it when it starts.
func (c *containerd) configure(source string) error {
	tmp := filepath.Join(c.root, "ember.toml.tmp")
	sock := ""
	if c.pool != nil {
		sock = c.pool.sock
	}
	if err := os.WriteFile(tmp, []byte(shimConfig(c.paths, c.root, source, c.profile, sock)), 0o644); err != nil {
		return fmt.Errorf("ctrbench: shim config: %w", err)
	}
	return os.Rename(tmp, filepath.Join(c.root, "ember.toml"))
}

// writeProfile writes the restore source's snapshot profile: an agent VM
// booted with spare drive slots, snapshotted once the agent is ready and
// idle.
func (c *containerd) writeProfile(ctx context.Context, p Paths) error {
	dir := filepath.Join(c.root, "profile-build")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	bc, err := json.Marshal(boot.Config{Kernel: p.Kernel, Initrd: p.Initrd, MemoryMiB: 256, VCPUs: 1, RNG: true,
		SpareDrives: 2, Vsock: &boot.Vsock{GuestCID: 3, UDS: filepath.Join(dir, "vsock.sock")}})
	if err != nil {
		return err
	}
	cfg := filepath.Join(dir, "boot.json")
	if err := os.WriteFile(cfg, bc, 0o600); err != nil {
		return err
	}
	profile := filepath.Join(c.root, "profile")
	out, err := exec.CommandContext(ctx, p.Ember, "snapshot", "create", "--config", cfg, "--out", profile,
		"--wait-for", "ember-agent ready", "--settle", "2s").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctrbench: ember snapshot create: %w\n%s", err, out)
	}
	c.profile = profile
	return nil
}

// served counts the shim's "served by SOURCE" lines in containerd's log.
func (c *containerd) served(source string) int {
	b, _ := os.ReadFile(filepath.Join(c.root, "containerd.log"))
	return strings.Count(string(b), "served by "+source)
}

func (c *containerd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.root, "containerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop kills containerd (its shims end with their tasks, which were all
// removed) and removes the run's directories, unmounting what is left.
func (c *containerd) stop() {
	if c.pool != nil {
		c.pool.stop()
	}
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
	if c.log != nil {
		c.log.Close()
	}
	c.cleanup()
}

func (c *containerd) cleanup() {
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var mnts []string
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], c.root) {
				mnts = append(mnts, f[1])
			}
		}
		for i := len(mnts) - 1; i >= 0; i-- {
			_ = unix.Unmount(mnts[i], unix.MNT_DETACH)
		}
	}
	_ = os.RemoveAll(c.root)
}
