package cgroups

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// fakeRoot lays out the files of a cgroup2 root in a plain directory.
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must(t, os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return string(b)
}

func TestOpenCreateUpdate(t *testing.T) {
	root := fakeRoot(t)
	h, err := Open(root, false)
	must(t, err)
	if got := read(t, filepath.Join(root, "ember", "cgroup.subtree_control")); got != "+pids" {
		// Each controller is written separately; the last write wins in a
		// plain file.
		t.Errorf("subtree_control = %q", got)
	}
	g, err := h.Create("c1")
	must(t, err)
	lim, quota, period, shares, pids := int64(64<<20), int64(50000), uint64(100000), uint64(1024), int64(100)
	must(t, g.Update(&specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &lim},
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period, Shares: &shares},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}))
	tests := []struct{ file, want string }{
		{"memory.max", "67108864"},
		{"cpu.max", "50000 100000"},
		{"cpu.weight", "39"},
		{"pids.max", "100"},
	}
	for _, tc := range tests {
		if got := read(t, filepath.Join(g.Path(), tc.file)); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.file, got, tc.want)
		}
	}
}

func TestInvalidIDs(t *testing.T) {
	h, err := Open(fakeRoot(t), false)
	must(t, err)
	for _, id := range []string{"", ".", "..", "a/b"} {
		if _, err := h.Create(id); err == nil {
			t.Errorf("Create(%q) succeeded", id)
		}
	}
}

func TestStats(t *testing.T) {
	dir := t.TempDir()
	g := &Group{dir: dir}
	must(t, os.WriteFile(filepath.Join(dir, "cpu.stat"), []byte("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "memory.current"), []byte("4096\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "memory.max"), []byte("max\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "pids.current"), []byte("3\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte("10\n11\n"), 0o644))
	s, err := g.Stats()
	must(t, err)
	want := Stats{CPUUsageNs: 1500000, CPUUserNs: 1000000, CPUSystemNs: 500000, MemoryUsage: 4096, Pids: 3}
	if s != want {
		t.Errorf("Stats = %+v, want %+v", s, want)
	}
	pids, err := g.Pids()
	must(t, err)
	if len(pids) != 2 || pids[0] != 10 || pids[1] != 11 {
		t.Errorf("Pids = %v", pids)
	}
}

func TestSharesToWeight(t *testing.T) {
	tests := []struct{ shares, weight uint64 }{{2, 1}, {1024, 39}, {262144, 10000}, {0, 1}, {1 << 30, 10000}}
	for _, tc := range tests {
		if got := SharesToWeight(tc.shares); got != tc.weight {
			t.Errorf("SharesToWeight(%d) = %d, want %d", tc.shares, got, tc.weight)
		}
	}
}

func TestHostIsNotV2(t *testing.T) {
	// The development hosts run cgroup v1; Open must refuse, not half-work.
	if Available(DefaultRoot) {
		t.Logf("%s is cgroup2 on this host", DefaultRoot)
		return
	}
	if _, err := Open(DefaultRoot, true); err == nil {
		t.Fatal("Open on a non-cgroup2 root succeeded")
	}
}

func TestOOMKills(t *testing.T) {
	tests := []struct {
		name    string
		events  *string // nil: no memory.events
		want    uint64
		wantErr error
	}{
		{"counted", ptr("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"), 2, nil},
		{"none yet", ptr("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), 0, nil},
		{"older kernel without the line", ptr("low 0\nhigh 0\nmax 0\noom 0\n"), 0, nil},
		{"empty (mid-write)", ptr(""), 0, nil},
		{"no memory controller", nil, 0, ErrNoMemoryEvents},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &Group{dir: t.TempDir()}
			if tc.events != nil {
				must(t, os.WriteFile(filepath.Join(g.dir, "memory.events"), []byte(*tc.events), 0o644))
			}
			n, err := g.OOMKills()
			if !errors.Is(err, tc.wantErr) || n != tc.want {
				t.Errorf("OOMKills = %d, %v; want %d, %v", n, err, tc.want, tc.wantErr)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestWatchMemoryEvents(t *testing.T) {
	g := &Group{dir: t.TempDir()}
	if _, err := g.WatchMemoryEvents(); !errors.Is(err, ErrNoMemoryEvents) {
		t.Fatalf("watch without memory.events: %v, want ErrNoMemoryEvents", err)
	}
	path := filepath.Join(g.dir, "memory.events")
	must(t, os.WriteFile(path, []byte("oom_kill 0\n"), 0o644))
	w, err := g.WatchMemoryEvents()
	must(t, err)
	select {
	case <-w.Changed():
		t.Fatal("a change reported before any")
	case <-time.After(50 * time.Millisecond):
	}
	// The kernel rewrites the file in place (a modification of the same
	// inode), as this write does.
	must(t, os.WriteFile(path, []byte("oom_kill 1\n"), 0o644))
	select {
	case _, ok := <-w.Changed():
		if !ok {
			t.Fatal("Changed closed before Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change reported within 5 s of a write")
	}
	if n, err := g.OOMKills(); err != nil || n != 1 {
		t.Errorf("OOMKills = %d, %v after the write", n, err)
	}
	must(t, w.Close())
	select {
	case _, ok := <-w.Changed():
		for ok {
			_, ok = <-w.Changed()
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Changed not closed within 5 s of Close")
	}
}
