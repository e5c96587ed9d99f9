package snapshot_test

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tg "github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/memory"
)

// smallSnapshot saves a small mid-computation guest and returns its
// directory and expected result.
func smallSnapshot(t *testing.T) (string, uint64) {
	t.Helper()
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec, want := mixSpec(t, 8<<20, 5000, 20*time.Millisecond)
	dir := t.TempDir()
	if _, err := guestrun.Create(ctx, sys, dir, spec); err != nil {
		t.Fatal(err)
	}
	return dir, want
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	names, _ := filepath.Glob(filepath.Join(src, "*"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(n)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// TestDamagedSnapshots damages a snapshot's files in each way and expects
// Open, and a restore in a fresh process, to fail with the matching error.
func TestDamagedSnapshots(t *testing.T) {
	good, _ := smallSnapshot(t)
	mem := mustOpen(t, good).State.MemoryFile
	editState := func(f func(b []byte) []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, snapshot.StateFile)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, f(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
	}{
		{"state truncated to 0", editState(func(b []byte) []byte { return nil }), snapshot.ErrTruncated},
		{"state truncated to 20", editState(func(b []byte) []byte { return b[:20] }), snapshot.ErrTruncated},
		{"state truncated by half", editState(func(b []byte) []byte { return b[:len(b)/2] }), snapshot.ErrTruncated},
		{"state bit flip", editState(func(b []byte) []byte { b[len(b)/2] ^= 1; return b }), snapshot.ErrChecksum},
		{"state wrong magic", editState(func(b []byte) []byte { copy(b, "GARBAGE!"); return b }), snapshot.ErrBadMagic},
		{"state newer major", editState(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[8:], 99); return b }), snapshot.ErrVersion},
		{"memory truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, mem), 4096); err != nil {
				t.Fatal(err)
			}
		}, snapshot.ErrTruncated},
		{"memory grown", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, mem), 64<<20); err != nil {
				t.Fatal(err)
			}
		}, snapshot.ErrCorrupt},
		{"memory missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, mem)); err != nil {
				t.Fatal(err)
			}
		}, os.ErrNotExist},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, good)
			tt.damage(t, dir)
			_, err := snapshot.Open(dir)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Open: %v, want %v", err, tt.want)
			}
			_, err = spawn(t, ctx, guestrun.Request{Dir: dir, Backend: snapshot.BackendUFFD})
			msg := strings.TrimPrefix(tt.want.Error(), "snapshot: ")
			if tt.want == os.ErrNotExist {
				msg = "no such file"
			}
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Fatalf("restore child: %v, want a %q error", err, tt.want)
			}
		})
	}
}

// TestMismatchedMachine restores into machines that do not fit.
func TestMismatchedMachine(t *testing.T) {
	dir, _ := smallSnapshot(t)
	snap := mustOpen(t, dir)
	sys := openKVM(t)
	size := snap.State.MemorySize()
	newMachine := func(vcpus int, mem uint64) *vmm.Machine {
		g, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: mem})
		if err != nil {
			t.Fatal(err)
		}
		m, err := vmm.New(sys, vmm.Config{VCPUs: vcpus, Memory: g})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	ctx := context.Background()
	vendor := *snap
	st := *snap.State
	st.CPU.Vendor = "CyrixInstead"
	vendor.State = &st
	for _, tt := range []struct {
		name string
		snap *snapshot.Snapshot
		m    *vmm.Machine
		want string
	}{
		{"vCPU count", snap, newMachine(2, size), "2"},
		{"memory size", snap, newMachine(1, size+tg.MinMemory), "memory region"},
		{"CPU vendor", &vendor, newMachine(1, size), "CyrixInstead"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := snapshot.Restore(ctx, tt.m, tt.snap)
			if !errors.Is(err, snapshot.ErrMismatch) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want ErrMismatch mentioning %q", err, tt.want)
			}
		})
	}
	if err := snapshot.Restore(ctx, newMachine(1, size), snap); err != nil {
		t.Fatalf("matching machine: %v", err)
	}
}

// TestSaveIsAtomic fails a save after its memory file is written but
// before the state file (as a crash there would) and checks the previous
// snapshot is intact and no new or temporary file is left.
func TestSaveIsAtomic(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec, want := mixSpec(t, 8<<20, 5000, 20*time.Millisecond)
	src, err := guestrun.Start(ctx, sys, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.PauseWhenReady(ctx, spec); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	first, _, err := src.Save(ctx, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	before := dirSum(t, dir)
	crash := errors.New("simulated crash")
	undo := snapshot.SetBeforeStateHook(func() error { return crash })
	if err := src.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.PauseWhenReady(ctx, spec); err != nil {
		t.Fatal(err)
	}
	_, _, err = src.Save(ctx, dir, false)
	undo()
	if !errors.Is(err, crash) {
		t.Fatalf("save: %v", err)
	}
	if dirSum(t, dir) != before {
		names, _ := filepath.Glob(filepath.Join(dir, "*"))
		hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
		t.Fatalf("failed save changed the directory: %v %v", names, hidden)
	}
	if hidden, _ := filepath.Glob(filepath.Join(dir, ".*")); len(hidden) != 0 {
		t.Fatalf("temporary files left: %v", hidden)
	}
	if st := mustOpen(t, dir).State; st.ID != first.ID {
		t.Fatalf("state is %s, want the first snapshot %s", st.ID, first.ID)
	}
	src.Close()
	r, err := spawn(t, ctx, guestrun.Request{Dir: dir, Backend: snapshot.BackendMmap})
	if err != nil || r.Reports[0] != want {
		t.Fatalf("previous snapshot after a failed save: %v %v", r, err)
	}
}
