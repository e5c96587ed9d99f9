package ctrbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
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
	cmd  *exec.Cmd
	log  *os.File
}

// shimConfig is the ember shim's configuration for the run.
func shimConfig(p Paths, root string) string {
	return fmt.Sprintf(`ember = %q
kernel = %q
initrd = %q
memory_mib = 256
vcpus = 1
backend = "boot"
state_dir = %q
cache_dir = %q
agent_timeout = "3m"
`, p.Ember, p.Kernel, p.Initrd, filepath.Join(root, "ember"), filepath.Join(root, "ember-cache"))
}

// startContainerd starts containerd (CRI disabled) on a socket under a new
// directory and waits until ctr reaches it.
func startContainerd(ctx context.Context, p Paths) (*containerd, error) {
	root, err := os.MkdirTemp("", "ember-ctrbench-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrContainerd, err)
	}
	c := &containerd{root: root, sock: filepath.Join(root, "containerd.sock"), bin: p.BinDir}
	cdCfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(root, "root"), filepath.Join(root, "state"), c.sock, c.sock+".ttrpc")
	files := map[string]string{"containerd.toml": cdCfg, "ember.toml": shimConfig(p, root)}
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
