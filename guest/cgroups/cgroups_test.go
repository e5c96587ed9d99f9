package cgroups

import (
	"os"
	"path/filepath"
	"testing"

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
