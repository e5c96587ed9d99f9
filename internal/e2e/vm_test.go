package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/devices/bootmarker"
	"github.com/embervm/ember/vmm/kvm"
)

// console is a guest console sink that tests can wait on.
type console struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newConsole() *console { return &console{changed: make(chan struct{})} }

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.b.Write(p)
	close(c.changed)
	c.changed = make(chan struct{})
	return len(p), nil
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// waitFor waits until the console holds a line matching re and returns
// the match's submatches.
func (c *console) waitFor(ctx context.Context, re *regexp.Regexp) ([]string, bool) {
	for {
		c.mu.Lock()
		m := re.FindStringSubmatch(c.b.String())
		ch := c.changed
		c.mu.Unlock()
		if m != nil {
			return m, true
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-ch:
		}
	}
}

// vm is a booted guest under test.
type vm struct {
	*boot.VM
	console *console
	started time.Time
	ended   chan struct{}
	res     *vmm.Result
	err     error
}

// startVM builds and starts a VM; it is closed when the test ends.
func startVM(t *testing.T, ctx context.Context, cfg boot.Config) *vm {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Close() })
	c := newConsole()
	cfg.Console = c
	if cfg.Kernel == "" {
		cfg.Kernel = kernelPath
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 256
	}
	if cfg.VCPUs == 0 {
		cfg.VCPUs = 1
	}
	b, err := boot.Build(ctx, sys, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{VM: b, console: c, ended: make(chan struct{})}
	t.Cleanup(func() {
		b.Close()
		if t.Failed() {
			t.Logf("guest console:\n%s", c.String())
		}
	})
	v.started = time.Now()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		v.res, v.err = b.Wait(context.Background())
		close(v.ended)
	}()
	return v
}

// expect waits for a whole console line (up to its end, which the UART
// may not have delivered yet) matching pattern and returns its
// submatches; it fails the test if none comes before ctx ends or the VM
// ends.
func (v *vm) expect(t *testing.T, ctx context.Context, pattern string) []string {
	t.Helper()
	re := regexp.MustCompile(pattern + `[^\n]*\n`)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-v.ended:
			// Let the console drain what the guest wrote last.
			time.Sleep(100 * time.Millisecond)
			cancel()
		case <-wctx.Done():
		}
	}()
	m, ok := v.console.waitFor(wctx, re)
	if !ok {
		t.Fatalf("no console line matching %q (context: %v, VM ended: %v)", pattern, ctx.Err(), v.hasEnded())
	}
	return m
}

func (v *vm) hasEnded() bool {
	select {
	case <-v.ended:
		return true
	default:
		return false
	}
}

// waitEnd waits for the VM to stop and checks that the guest ended it
// cleanly through a reset (reboot=k: the i8042).
func (v *vm) waitEnd(t *testing.T, ctx context.Context) time.Duration {
	t.Helper()
	select {
	case <-v.ended:
	case <-ctx.Done():
		t.Fatalf("VM still running: %v", ctx.Err())
	}
	took := time.Since(v.started)
	if v.err != nil {
		t.Fatalf("wait: %v", v.err)
	}
	if v.res.Err != nil || v.res.Stop == nil || !strings.Contains(v.res.Stop.Reason, "reboot") {
		t.Fatalf("VM ended with stop %+v, error %v; want a clean guest reboot stop", v.res.Stop, v.res.Err)
	}
	return took
}

// mark returns the first boot marker with code.
func (v *vm) mark(code uint8) (bootmarker.Mark, bool) {
	for _, m := range v.Marks() {
		if m.Code == code {
			return m, true
		}
	}
	return bootmarker.Mark{}, false
}

// ping pings addr from this side (L1, or the host when native) and
// reports whether replies came back.
func ping(t *testing.T, ctx context.Context, addr string) error {
	t.Helper()
	args := []string{"-c", "2", "-W", "3", addr}
	name, err := exec.LookPath("ping")
	if err != nil {
		name, args = "busybox", append([]string{"ping"}, args...)
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Logf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return err
}
