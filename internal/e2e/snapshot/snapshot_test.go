// Package snapshot_test holds the nested-lab tests of Linux snapshots:
// boot the project's guest kernel with a small workload, snapshot it with
// `ember snapshot create`, and restore it in fresh VMM processes (`ember
// restore`, `ember vmm --restore`) with every memory backend; the restored
// guest must carry on (console, clock, disk, vsock).
package snapshot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/vmm/api"
	"github.com/embervm/ember/vmm/boot"
)

// created is a Linux snapshot made by `ember snapshot create`.
type created struct {
	dir, snap, disk string
	ready, save     time.Duration
	init            time.Duration // VM start to the boot marker (/init)
	lastTick        int           // the last ticker count before the snapshot
	uptime          float64       // the guest's uptime in that tick line
}

var tickRE = regexp.MustCompile(`tick:([0-9]+):([0-9]+\.[0-9]+)`)

func createSnapshot(t *testing.T, ember string) *created {
	t.Helper()
	c := &created{dir: t.TempDir()}
	c.disk = filepath.Join(c.dir, "disk.img")
	writeDisk(t, c.disk)
	cfg := writeBootConfig(t, c.dir, c.disk, filepath.Join(c.dir, "boot-vsock.sock"))
	c.snap = filepath.Join(c.dir, "snap")
	conLog := filepath.Join(c.dir, "boot-console.log")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ember, "snapshot", "create", "--config", cfg, "--out", c.snap,
		"--wait-for-marker", "--wait-for", "READY", "--settle", "1500ms", "--json", "--console", conLog)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	con, _ := os.ReadFile(conLog)
	if err != nil {
		t.Fatalf("ember snapshot create: %v\nstderr:\n%s\nconsole:\n%s", err, stderr.String(), con)
	}
	var res struct {
		ID    string        `json:"id"`
		Ready time.Duration `json:"ready_ns"`
		Init  time.Duration `json:"init_ns"`
		Save  time.Duration `json:"save_ns"`
		Pages uint64        `json:"pages_written"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("ember snapshot create output %q: %v", out, err)
	}
	c.ready, c.save, c.init = res.Ready, res.Save, res.Init
	ticks := tickRE.FindAllStringSubmatch(string(con), -1)
	if len(ticks) == 0 {
		t.Fatalf("no ticker line before the snapshot; console:\n%s", con)
	}
	last := ticks[len(ticks)-1]
	c.lastTick, _ = strconv.Atoi(last[1])
	c.uptime, _ = strconv.ParseFloat(last[2], 64)
	t.Logf("snapshot %s: /init %v after VM start, guest READY %v after `ember snapshot create` started, saved in %v (%d pages); last tick %d at uptime %.2f",
		res.ID, res.Init.Round(time.Millisecond), res.Ready.Round(time.Millisecond), res.Save.Round(time.Millisecond), res.Pages, c.lastTick, c.uptime)

	s, err := snapshot.Open(c.snap)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range s.State.Devices {
		names = append(names, d.Name)
	}
	for _, want := range []string{boot.MachineBlob, boot.SerialBlob, "virtio.0", "virtio.1", "virtio.2"} {
		if !slices.Contains(names, want) {
			t.Errorf("snapshot devices %q lack %q", names, want)
		}
	}
	return c
}

// restoreRun is what one functional restore measured.
type restoreRun struct {
	label      string
	responsive time.Duration // spawn to the first pong
	res        *restoreResult
}

// TestNativeLinuxSnapshotRestore boots the guest kernel with a workload,
// snapshots it, and restores it in fresh `ember restore` processes with
// each backend (prefetch twice: recording, then installing the working
// set). Each restored guest must answer on its console, show a clock that
// carried on from the snapshot and moves, read and write its disk, and
// accept a new vsock connection after the transport reset. Then it is
// restored behind the control API (vmm-api), and restore latency is
// measured per backend, interleaved (latency). One boot serves all.
func TestNativeLinuxSnapshotRestore(t *testing.T) {
	ember := emberBin(t)
	c := createSnapshot(t, ember)
	runs := []struct{ label, backend string }{
		{"copy", "copy"}, {"mmap", "mmap"}, {"uffd", "uffd"},
		{"prefetch-record", "prefetch"}, {"prefetch", "prefetch"},
	}
	var done []restoreRun
	for i, r := range runs {
		t.Run(r.label, func(t *testing.T) {
			run := functionalRestore(t, ember, c, r.label, r.backend, i)
			done = append(done, run)
			switch r.label {
			case "prefetch-record":
				if run.res.WorkingSetPages == 0 {
					t.Errorf("recording restore saved no working set: %+v", run.res)
				}
			case "prefetch":
				if run.res.Stats.WorkingSetPages == 0 || run.res.Stats.PagesPrefetched == 0 {
					t.Errorf("prefetch restore installed no working set: %+v", run.res.Stats)
				}
			}
		})
	}
	if t.Failed() {
		return
	}
	t.Run("vmm-api", func(t *testing.T) { vmmRestore(t, ember, c) })
	t.Run("latency", func(t *testing.T) { measureLatency(t, ember, c) })
}

func functionalRestore(t *testing.T, ember string, c *created, label, backend string, i int) restoreRun {
	img := filepath.Join(c.dir, "disk-"+label+".img")
	copyFile(t, c.disk, img)
	uds := filepath.Join(c.dir, label+".sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	g := spawnRestore(t, ember, c.snap, backend, "--drive", img, "--vsock-uds", uds)
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s\nember stderr:\n%s\nconsole after restore:\n%s", fmt.Sprintf(format, a...), g.stderr.String(), g.con.String())
	}
	up1, err := g.ping(ctx, "first")
	if err != nil {
		fail("console: %v", err)
	}
	run := restoreRun{label: label, responsive: time.Since(g.spawned)}
	if up1 < c.uptime {
		fail("guest uptime %.2f after restore is below %.2f at the snapshot: the clock went back", up1, c.uptime)
	}
	// The ticker carries on from its count at the snapshot.
	m, err := g.con.waitRE(ctx, tickRE, 0)
	if err != nil {
		fail("ticker: %v", err)
	}
	if n, _ := strconv.Atoi(m[1]); n < c.lastTick {
		fail("first tick after restore is %d, the snapshot had reached %d", n, c.lastTick)
	}
	time.Sleep(1500 * time.Millisecond)
	up2, err := g.ping(ctx, "second")
	if err != nil {
		fail("console: %v", err)
	}
	if d := up2 - up1; d < 1.0 || d > 30 {
		fail("guest uptime moved %.2f s in 1.5 s of host time", d)
	}
	if err := checkDisk(ctx, g, img, 100+i, 900+i, "written-by-"+label); err != nil {
		fail("disk: %v", err)
	}
	if err := vsockEcho(ctx, uds, "hello-"+label); err != nil {
		fail("vsock: %v", err)
	}
	res, err := g.stop()
	if err != nil {
		fail("%v", err)
	}
	run.res = res
	t.Logf("%s: first pong %v after spawn (vCPUs running at %v; restore %v); uptime %.2f→%.2f; faults %d, read %d KiB, zero-filled %d, prefetched %d (working set %d), saved working set %d pages",
		label, run.responsive.Round(time.Millisecond), res.FromProcessStart.Round(time.Millisecond), res.Restore.Round(time.Millisecond),
		up1, up2, res.Stats.FaultsServed, res.Stats.BytesRead>>10, res.Stats.PagesZeroFilled, res.Stats.PagesPrefetched,
		res.Stats.WorkingSetPages, res.WorkingSetPages)
	return run
}

// latencyRounds is how many restores per backend the latency measurement
// makes (interleaved).
const latencyRounds = 5

// measureLatency restores the snapshot latencyRounds times per backend,
// interleaved, and reports spawn → vCPUs running and spawn → first pong
// (restore to responsive) as medians, with ratios to copy and to the
// boot's time to READY. "prefetch-first" is prefetch with the working set
// installed before the vCPUs run (--prefetch-first).
func measureLatency(t *testing.T, ember string, c *created) {
	backends := []string{"copy", "mmap", "uffd", "prefetch", "prefetch-first"}
	running := map[string][]time.Duration{}
	pong := map[string][]time.Duration{}
	for round := range latencyRounds {
		for _, b := range backends {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			args := []string{"--vsock-uds", filepath.Join(c.dir, fmt.Sprintf("lat-%s-%d.sock", b, round))}
			backend := b
			if b == "prefetch-first" {
				backend, args = "prefetch", append(args, "--prefetch-first")
			}
			g := spawnRestore(t, ember, c.snap, backend, args...)
			_, err := g.ping(ctx, "lat")
			took := time.Since(g.spawned)
			cancel()
			if err != nil {
				t.Fatalf("%s round %d: %v\nstderr:\n%s", b, round, err, g.stderr.String())
			}
			res, err := g.stop()
			if err != nil {
				t.Fatalf("%s round %d: %v", b, round, err)
			}
			pong[b] = append(pong[b], took)
			running[b] = append(running[b], res.FromProcessStart)
			t.Logf("round %d %s: vCPUs running %v, first answer %v", round, b,
				res.FromProcessStart.Round(time.Millisecond), took.Round(time.Millisecond))
		}
	}
	med := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	copyPong := med(pong["copy"])
	var b strings.Builder
	fmt.Fprintf(&b, "Linux restore latency, %d restores per backend (median; TCG nested lab); the boot: /init %v after VM start, READY %v after process start:\n",
		latencyRounds, c.init.Round(time.Millisecond), c.ready.Round(time.Millisecond))
	fmt.Fprintf(&b, "| backend | spawn → vCPUs running | spawn → first console answer | vs copy | vs boot to READY (%v) |\n|---|---|---|---|---|\n",
		c.ready.Round(time.Millisecond))
	for _, be := range backends {
		p := med(pong[be])
		fmt.Fprintf(&b, "| %s | %v | %v | %.2fx | %.1fx faster |\n", be, med(running[be]).Round(time.Millisecond),
			p.Round(time.Millisecond), float64(p)/float64(copyPong), float64(c.ready)/float64(p))
	}
	t.Log("\n" + b.String())
}

// vmmRestore restores the snapshot behind the control API (`ember vmm
// --restore`, as the warm pool runs it): the VM waits paused, runs on
// resume, answers on vsock, is snapshotted again through the API (a diff
// is refused: virtio devices), and that snapshot of a restored VM restores
// too.
func vmmRestore(t *testing.T, ember string, c *created) {
	sock := filepath.Join(c.dir, "api.sock")
	conLog := filepath.Join(c.dir, "vmm-console.log")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.Command(ember, "vmm", "--restore", c.snap, "--backend", "uffd", "--api-sock", sock, "--console", conLog, "--linger", "0s")
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	fail := func(format string, a ...any) {
		t.Helper()
		con, _ := os.ReadFile(conLog)
		t.Fatalf("%s\nember vmm output:\n%s\nconsole:\n%s", fmt.Sprintf(format, a...), stderr.String(), con)
	}
	cl := api.NewClient(sock)
	defer cl.Close()
	var info *api.Info
	var err error
	for ctx.Err() == nil {
		if info, err = cl.Info(ctx); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		fail("API: %v", err)
	}
	if info.State != api.StatePaused || info.Source != "restore:uffd" || info.MemoryMiB < 250 {
		fail("restored VMM info %+v, want a paused restore:uffd VM", info)
	}
	time.Sleep(500 * time.Millisecond)
	if con, _ := os.ReadFile(conLog); tickRE.Match(con) {
		fail("the paused VM printed ticks before it was resumed")
	}
	if err := cl.Action(ctx, api.ActionResume); err != nil {
		fail("resume: %v", err)
	}
	for {
		con, _ := os.ReadFile(conLog)
		if tickRE.Match(con) {
			break
		}
		if ctx.Err() != nil {
			fail("no tick after resume")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := vsockEcho(ctx, sock+".vsock", "hello-vmm"); err != nil {
		fail("vsock: %v", err)
	}
	m, err := cl.Metrics(ctx)
	if err != nil || m.Restore == nil || m.Restore.Backend != "uffd" || m.Restore.Faults == 0 {
		fail("metrics %+v (%v), want uffd restore stats with faults", m, err)
	}
	if err := cl.Action(ctx, api.ActionPause); err != nil {
		fail("pause: %v", err)
	}
	snap2 := filepath.Join(c.dir, "snap2")
	if err := cl.Snapshot(ctx, api.SnapshotRequest{Dir: snap2}); err != nil {
		fail("snapshot of the restored VM: %v", err)
	}
	if err := cl.Snapshot(ctx, api.SnapshotRequest{Dir: filepath.Join(c.dir, "diff"), Diff: true}); err == nil ||
		!strings.Contains(err.Error(), "virtio") {
		fail("diff snapshot of a VM with virtio devices: %v, want a refusal naming virtio", err)
	}
	if err := cl.Action(ctx, api.ActionStop); err != nil {
		fail("stop: %v", err)
	}
	select {
	case <-exited:
		exited <- nil
	case <-ctx.Done():
		fail("ember vmm did not exit after stop")
	}
	// The snapshot of the restored VM restores in turn.
	g := spawnRestore(t, ember, snap2, "copy", "--vsock-uds", filepath.Join(c.dir, "snap2.sock"))
	if _, err := g.ping(ctx, "again"); err != nil {
		t.Fatalf("restore of a restored VM's snapshot: %v\nstderr:\n%s\nconsole:\n%s", err, g.stderr.String(), g.con.String())
	}
	if err := vsockEcho(ctx, filepath.Join(c.dir, "snap2.sock"), "hello-again"); err != nil {
		t.Fatalf("vsock after the second restore: %v", err)
	}
	if _, err := g.stop(); err != nil {
		t.Fatal(err)
	}
}
