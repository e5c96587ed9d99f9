package snapshot_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/internal/lab/labtest"
)

// emberBin returns the ember binary to spawn: the lab's /bin/ember (built
// from this tree by labtest), or one built for this test on a native host.
func emberBin(t *testing.T) string {
	t.Helper()
	if labtest.InLab() {
		if p, err := exec.LookPath("ember"); err == nil {
			return p
		}
		return "/bin/ember"
	}
	p, err := labtest.BuildEmber(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// console collects a guest console and lets tests wait for text in it.
type console struct {
	mu     sync.Mutex
	b      bytes.Buffer
	notify chan struct{}
	closed bool
}

func newConsole() *console { return &console{notify: make(chan struct{})} }

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.Write(p)
	close(c.notify)
	c.notify = make(chan struct{})
	return len(p), nil
}

func (c *console) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	close(c.notify)
	c.notify = make(chan struct{})
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// Len returns how many bytes were written so far (an offset for waitRE).
func (c *console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.Len()
}

// waitRE waits until re matches the console after offset from and returns
// the submatches.
func (c *console) waitRE(ctx context.Context, re *regexp.Regexp, from int) ([]string, error) {
	for {
		c.mu.Lock()
		s := c.b.String()
		ch, closed := c.notify, c.closed
		c.mu.Unlock()
		if from < len(s) {
			if m := re.FindStringSubmatch(s[from:]); m != nil {
				return m, nil
			}
		}
		if closed {
			return nil, fmt.Errorf("console closed without %q", re)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %q: %w", re, ctx.Err())
		}
	}
}

// guest is a VMM child process running a restored guest with its console
// on a pipe and its serial input on stdin.
type guest struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	con     *console
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	spawned time.Time
	done    chan struct{}
	waitErr error
}

// restoreResult is ember restore --json's output.
type restoreResult struct {
	Backend          string        `json:"backend"`
	Restore          time.Duration `json:"restore_ns"`
	FromProcessStart time.Duration `json:"from_process_start_ns"`
	Error            string        `json:"error"`
	Stats            struct {
		FaultsServed    uint64 `json:"FaultsServed"`
		BytesRead       uint64 `json:"BytesRead"`
		PagesZeroFilled uint64 `json:"PagesZeroFilled"`
		PagesPrefetched uint64 `json:"PagesPrefetched"`
		WorkingSetPages uint64 `json:"WorkingSetPages"`
		Recording       bool   `json:"Recording"`
	} `json:"stats"`
	WorkingSetPages uint64 `json:"working_set_pages"`
}

// spawnRestore starts `ember restore` of snap with backend and extra flags.
func spawnRestore(t *testing.T, ember, snap, backend string, extra ...string) *guest {
	t.Helper()
	g := &guest{t: t, con: newConsole(), done: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"restore", "--snapshot", snap, "--backend", backend, "--json", "--console", "/proc/self/fd/3"}, extra...)
	g.cmd = exec.Command(ember, args...)
	g.cmd.ExtraFiles = []*os.File{pw}
	g.cmd.Stdout, g.cmd.Stderr = &g.stdout, &g.stderr
	g.stdin, err = g.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	g.spawned = time.Now()
	g.cmd.Env = append(os.Environ(), "EMBER_SPAWN_NS="+strconv.FormatInt(g.spawned.UnixNano(), 10))
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	go func() {
		io.Copy(g.con, pr)
		pr.Close()
		g.con.close()
	}()
	go func() {
		g.waitErr = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() { g.kill() })
	return g
}

func (g *guest) kill() {
	select {
	case <-g.done:
	default:
		g.cmd.Process.Kill()
		<-g.done
	}
}

// send writes one line to the guest's serial input.
func (g *guest) send(line string) {
	g.t.Helper()
	if _, err := io.WriteString(g.stdin, line+"\n"); err != nil {
		g.t.Fatalf("writing to the guest: %v", err)
	}
}

var uptimeRE = `([0-9]+\.[0-9]+)`

// ping sends "p token" and waits for its pong; it returns the guest's
// uptime in the answer.
func (g *guest) ping(ctx context.Context, token string) (float64, error) {
	from := g.con.Len()
	g.send("p " + token)
	m, err := g.con.waitRE(ctx, regexp.MustCompile(`pong:`+regexp.QuoteMeta(token)+`:`+uptimeRE), from)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(m[1], 64)
}

// exec runs a shell command line in the guest and returns its output and
// exit status.
func (g *guest) exec(ctx context.Context, cmdline string) (string, int, error) {
	from := g.con.Len()
	g.send("x " + cmdline)
	m, err := g.con.waitRE(ctx, regexp.MustCompile(`(?s)^(.*?)xdone:([0-9]+)`), from)
	if err != nil {
		return "", -1, err
	}
	st, _ := strconv.Atoi(m[2])
	return m[1], st, nil
}

// stop ends the VMM with SIGTERM (a recording restore then writes its
// working set) and returns its JSON result.
func (g *guest) stop() (*restoreResult, error) {
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		// Its goroutines, for the report (Go dumps them on SIGQUIT).
		g.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-g.done:
		case <-time.After(5 * time.Second):
			g.cmd.Process.Kill()
			select {
			case <-g.done:
			case <-time.After(10 * time.Second):
				return nil, fmt.Errorf("ember restore did not stop on SIGTERM, SIGQUIT or SIGKILL")
			}
		}
		return nil, fmt.Errorf("ember restore did not stop on SIGTERM\nstderr:\n%s", g.stderr.String())
	}
	var res restoreResult
	if err := json.Unmarshal(g.stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("ember restore output %q: %w (exit: %v)\nstderr:\n%s", g.stdout.String(), err, g.waitErr, g.stderr.String())
	}
	if res.Error != "" {
		return &res, fmt.Errorf("ember restore: %s", res.Error)
	}
	return &res, nil
}

// vsockEcho connects to the guest's echo server through the vsock device's
// Unix socket and checks one round trip. Connecting is retried for a
// while: right after a restore the guest may still be handling the
// transport reset.
func vsockEcho(ctx context.Context, uds, msg string) error {
	var last error
	for ctx.Err() == nil {
		if last = vsockOnce(uds, msg); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("vsock echo through %s: %w (last: %v)", uds, ctx.Err(), last)
}

func vsockOnce(uds, msg string) error {
	c, err := net.DialTimeout("unix", uds, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT 5000\n"); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if !strings.HasPrefix(line, "OK ") {
		return fmt.Errorf("handshake answer %q", line)
	}
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("echo: %w", err)
	}
	if got != msg+"\n" {
		return fmt.Errorf("echo %q, want %q", got, msg)
	}
	return nil
}

// diskBlocks is the test disk's size in 4 KiB blocks; block i holds a
// pattern derived from i.
const diskBlocks = 1024

func blockPattern(i int) []byte {
	b := make([]byte, 4096)
	for j := 0; j < len(b); j += 16 {
		copy(b[j:], fmt.Sprintf("blk%06d-%06d\n", i, j/16))
	}
	return b
}

func writeDisk(t *testing.T, path string) {
	t.Helper()
	var b bytes.Buffer
	for i := range diskBlocks {
		b.Write(blockPattern(i))
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func md5Hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// checkDisk reads block blk in the guest (past its page cache) and
// compares it with the image; then writes a tag at block wblk with fsync
// and finds it in the host image file.
func checkDisk(ctx context.Context, g *guest, image string, blk, wblk int, tag string) error {
	out, st, err := g.exec(ctx, fmt.Sprintf("echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=4096 skip=%d count=1 2>/dev/null | md5sum", blk))
	if err != nil {
		return err
	}
	if want := md5Hex(blockPattern(blk)); st != 0 || !strings.Contains(out, want) {
		return fmt.Errorf("reading block %d in the guest: status %d, output %q, want md5 %s", blk, st, out, want)
	}
	_, st, err = g.exec(ctx, fmt.Sprintf("echo %s | dd of=/dev/vda bs=4096 seek=%d conv=fsync 2>/dev/null", tag, wblk))
	if err != nil {
		return err
	}
	if st != 0 {
		return fmt.Errorf("writing block %d in the guest: status %d", wblk, st)
	}
	f, err := os.Open(image)
	if err != nil {
		return err
	}
	defer f.Close()
	got := make([]byte, len(tag)+1)
	if _, err := f.ReadAt(got, int64(wblk)*4096); err != nil {
		return err
	}
	if string(got) != tag+"\n" {
		return fmt.Errorf("image block %d holds %q after the guest's write, want %q", wblk, got, tag)
	}
	return nil
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeBootConfig writes the boot configuration of the test guest.
func writeBootConfig(t *testing.T, dir, disk, uds string) string {
	t.Helper()
	cfg := map[string]any{
		"kernel": kernelPath, "initrd": initrdPath, "cmdline": "-- sh /run.sh",
		"memory_mib": 256, "vcpus": 1,
		"drives": []map[string]any{{"path": disk, "id": "data"}},
		"vsock":  map[string]any{"guest_cid": 3, "uds": uds},
		"rng":    true,
	}
	b, _ := json.Marshal(cfg)
	p := filepath.Join(dir, "boot.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
