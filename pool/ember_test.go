package pool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embervm/ember/internal/fixtures"
)

// TestDefaultEmber: a pool whose configuration names no binary runs its
// VMMs with the ember-vmm next to the running executable when that is
// there and executable, else with the running executable.
func TestDefaultEmber(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, lean string) // makes (or not) lean
		want  string                          // "lean" or "exe"
	}{
		{"present and executable", func(t *testing.T, lean string) { writeFile(t, lean, 0o755) }, "lean"},
		{"executable by its owner only", func(t *testing.T, lean string) { writeFile(t, lean, 0o700) }, "lean"},
		{"absent", func(t *testing.T, lean string) {}, "exe"},
		{"present but not executable", func(t *testing.T, lean string) { writeFile(t, lean, 0o644) }, "exe"},
		{"a directory", func(t *testing.T, lean string) {
			if err := os.Mkdir(lean, 0o755); err != nil {
				t.Fatal(err)
			}
		}, "exe"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			exe := filepath.Join(dir, "ember")
			writeFile(t, exe, 0o755)
			lean := filepath.Join(dir, "ember-vmm")
			tt.setup(t, lean)
			want := map[string]string{"lean": lean, "exe": exe}[tt.want]
			if got := defaultEmber(exe); got != want {
				t.Errorf("defaultEmber(%s) = %s, want %s", exe, got, want)
			}
		})
	}
}

func writeFile(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// TestPoolOfLeanVMMs: ember-vmm runs a pool's VMMs as ember does (the pool
// runs `EMBER vmm ARGS`), lease and claim included.
func TestPoolOfLeanVMMs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lean := filepath.Join(t.TempDir(), "ember-vmm")
	if err := fixtures.GoBuild(ctx, "./cmd/ember-vmm", lean); err != nil {
		t.Fatal(err)
	}
	m, _ := newPoolOf(t, lean, 1, 0)
	waitReady(t, m, 1)
	c, err := m.Claim(ctx, "tg", ClaimOptions{Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.PID)); err != nil || exe != lean {
		t.Errorf("claimed VMM %d runs %q (%v), want %s", c.PID, exe, err, lean)
	}
	if err := finish(ctx, c, true); err != nil {
		t.Fatal(err)
	}
}
