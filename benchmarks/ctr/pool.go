package ctrbench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/embervm/ember/pool"
)

// SourcePool claims a VM restored from the snapshot profile from an
// `ember pool serve` the run starts.
const SourcePool = "pool"

// poolProfile is the pool profile's name in the shim's configuration.
const poolProfile = "bench"

// poolRefillDelay holds a claimed VM's replacement back so that, on the
// lab's single vCPU, it does not run during the sample; Run waits for the
// pool to be full again before each pool sample (outside the timing).
const poolRefillDelay = 10 * time.Second

// warmPool is an `ember pool serve` of one VM restored from the profile.
type warmPool struct {
	sock   string
	cmd    *exec.Cmd
	log    *os.File
	client *pool.Client
}

// startPool starts the pool daemon under root and waits until its VM is
// ready.
func startPool(ctx context.Context, p Paths, root, profile string) (*warmPool, error) {
	run := filepath.Join(root, "pool-run")
	cfg, err := json.Marshal(pool.Config{
		Ember: p.Ember, RunDir: run, StartTimeout: pool.Duration(3 * time.Minute), RefillDelay: pool.Duration(poolRefillDelay),
		Profiles: []pool.Profile{{Name: poolProfile, Size: 1, MemoryMiB: 256, IsolateNetwork: true,
			VMMArgs: []string{"--restore", profile, "--backend", "mmap"}}},
	})
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(root, "pool.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		return nil, fmt.Errorf("ctrbench: pool config: %w", err)
	}
	w := &warmPool{sock: filepath.Join(root, "pool.sock")}
	if w.log, err = os.Create(filepath.Join(root, "pool.log")); err != nil {
		return nil, fmt.Errorf("ctrbench: pool log: %w", err)
	}
	w.cmd = exec.Command(p.Ember, "pool", "serve", "--config", cfgPath, "--socket", w.sock)
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		w.log.Close()
		return nil, fmt.Errorf("ctrbench: ember pool serve: %w", err)
	}
	w.client = pool.NewClient(w.sock)
	if err := w.waitFull(ctx); err != nil {
		w.stop()
		return nil, err
	}
	return w, nil
}

// waitFull waits until the pool's VM is ready and none is starting.
func (w *warmPool) waitFull(ctx context.Context) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		st, err := w.client.Status(ctx)
		if err == nil && len(st) == 1 && st[0].Ready == 1 && st[0].Starting == 0 {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			b, _ := os.ReadFile(w.log.Name())
			return fmt.Errorf("ctrbench: the pool has no ready VM after 3 minutes (%+v, %v)\n%s", st, err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends the pool daemon, which kills its ready VMs.
func (w *warmPool) stop() {
	if w.client != nil {
		w.client.Close()
	}
	if w.cmd.Process != nil {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = w.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = w.cmd.Process.Kill()
			<-done
		}
	}
	w.log.Close()
}
