package guestrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/vmm/kvm"
)

// processStart approximates when this process started: the spawner's
// timestamp if it passed one in SpawnEnv, else package initialisation.
var processStart = time.Now()

// Environment variables of a restore child.
const (
	// SpawnEnv carries the spawner's clock (Unix ns) just before exec.
	SpawnEnv = "EMBER_SPAWN_NS"
	// RequestEnv carries a JSON Request to a re-executed test binary.
	RequestEnv = "EMBER_GUESTRUN_REQUEST"
)

func spawnTime() time.Time {
	if v, err := strconv.ParseInt(os.Getenv(SpawnEnv), 10, 64); err == nil && v > 0 {
		return time.Unix(0, v)
	}
	return processStart
}

// Request says what to restore and how.
type Request struct {
	Dir     string           `json:"dir"`
	Backend snapshot.Backend `json:"backend"`
	// Record records the working set with the uffd backend too.
	Record bool `json:"record,omitempty"`
	// SaveWorkingSet writes the recorded working set when the guest ends.
	SaveWorkingSet bool `json:"save_working_set,omitempty"`
	// Timeout bounds the guest's run; zero means a minute.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// Result is what a restored test guest did and what the restore cost.
type Result struct {
	ExitCode int      `json:"exit_code"`
	Reports  []uint64 `json:"reports"`
	Error    string   `json:"error,omitempty"`

	Stats snapshot.Stats `json:"stats"`
	// FromProcessStart is process start to the first guest instruction
	// (the vCPU entering KVM_RUN).
	FromProcessStart time.Duration `json:"from_process_start_ns"`
	// FromRestoreStart is snapshot.Open to the first guest instruction.
	FromRestoreStart time.Duration `json:"from_restore_start_ns"`
	// Run is the first guest instruction to the guest's exit: for a
	// working-set guest, the time to touch its working set.
	Run time.Duration `json:"run_ns"`
	// Prefetch is how long installing the working set took.
	Prefetch time.Duration `json:"prefetch_ns,omitempty"`
	// RSSKiB is the process's resident set at the guest's exit.
	RSSKiB uint64 `json:"rss_kib"`
	// WorkingSetPages is how many pages SaveWorkingSet wrote.
	WorkingSetPages uint64 `json:"working_set_pages,omitempty"`
}

// Restore restores the test-guest snapshot in req.Dir in this process with
// req.Backend, runs it to its exit and reports. The returned error is also
// in Result.Error when a Result is returned.
func Restore(ctx context.Context, sys *kvm.System, req Request, log *slog.Logger) (*Result, error) {
	snap, err := snapshot.Open(req.Dir)
	if err != nil {
		return &Result{Error: err.Error()}, err
	}
	return RestoreOpened(ctx, sys, snap, req, log)
}

// RestoreOpened is Restore for a snapshot the caller opened already (to
// tell its kind, say), so that it is not read and parsed again; req.Dir is
// not used. FromRestoreStart still counts from the snapshot's opening.
func RestoreOpened(ctx context.Context, sys *kvm.System, snap *snapshot.Snapshot, req Request, log *slog.Logger) (*Result, error) {
	if log == nil {
		log = slog.Default()
	}
	res := &Result{}
	err := restore(ctx, sys, snap, req, log, res)
	if err != nil {
		res.Error = err.Error()
	}
	return res, err
}

func restore(ctx context.Context, sys *kvm.System, snap *snapshot.Snapshot, req Request, log *slog.Logger, res *Result) error {
	t0 := snap.OpenedAt
	timeout := req.Timeout
	if timeout == 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := Prepare(ctx, sys, snap, snapshot.MemoryOptions{Backend: req.Backend, Record: req.Record, Logger: log})
	if err != nil {
		return err
	}
	defer p.Close()
	g, mem := p.Guest, p.Memory
	if err := g.Start(ctx); err != nil {
		return err
	}
	first := time.Now()
	mem.StartPrefetch()
	res.FromRestoreStart = first.Sub(t0)
	res.FromProcessStart = first.Sub(spawnTime())
	go func() {
		select {
		case <-ctx.Done():
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			g.Stop(stopCtx)
		case <-g.Done():
		}
	}()
	out, werr := g.Wait(context.Background(), first)
	res.Run = time.Since(first)
	res.RSSKiB = rssKiB()
	if out != nil {
		res.ExitCode = out.ExitCode
		res.Reports = p.Reports()
	}
	res.Prefetch, _ = mem.WaitPrefetch(ctx)
	res.Stats = mem.Stats()
	if err := mem.Err(); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	if ctx.Err() != nil {
		return fmt.Errorf("guestrun: guest did not finish: %w", ctx.Err())
	}
	if req.SaveWorkingSet && res.Stats.Recording {
		if res.WorkingSetPages, err = mem.SaveWorkingSet(); err != nil {
			return err
		}
	}
	return nil
}

// rssKiB returns VmRSS from /proc/self/status.
func rssKiB() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// ChildMain is the entry point of a re-executed test binary: if RequestEnv
// is set it restores the requested snapshot, writes the Result as JSON on
// stdout and returns true with the exit status to use.
func ChildMain() (handled bool, status int) {
	raw := os.Getenv(RequestEnv)
	if raw == "" {
		return false, 0
	}
	var req Request
	if err := json.Unmarshal([]byte(raw), &req); err != nil {
		fmt.Fprintf(os.Stderr, "guestrun: bad request: %v\n", err)
		return true, 2
	}
	sys, err := kvm.Open()
	if err != nil {
		fmt.Fprintf(os.Stderr, "guestrun: %v\n", err)
		return true, 1
	}
	defer sys.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, _ := Restore(context.Background(), sys, req, log)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return true, 1
	}
	return true, 0
}

// Spawn runs argv (a test binary, or an executable whose ChildMain or
// `restore --json` handles the request) as a fresh process restoring req,
// and decodes its Result. A non-empty Result.Error is returned as an error
// too.
func Spawn(ctx context.Context, argv []string, req Request) (*Result, error) {
	raw, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), RequestEnv+"="+string(raw))
	cmd.Env = append(cmd.Env, SpawnEnv+"="+strconv.FormatInt(time.Now().UnixNano(), 10))
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("guestrun: restore child: %w\n%s", err, stderr.Bytes())
	}
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("guestrun: restore child output: %w\n%s\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	if res.Error != "" {
		return &res, errors.New(res.Error)
	}
	return &res, nil
}
