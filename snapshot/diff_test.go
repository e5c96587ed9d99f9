package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
)

// TestDiffChain takes a full snapshot and two diffs of a running guest,
// plus a full snapshot at the end, and checks that base + diff1 + diff2
// merged equals the final full snapshot, and that the merge restores (in a
// fresh process) to the right result.
func TestDiffChain(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec, want := mixSpec(t, 32<<20, 200, 30*time.Millisecond)
	spec.DirtyLog = true
	src, err := guestrun.Start(ctx, sys, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	root := t.TempDir()
	dirs := map[string]string{}
	for _, step := range []struct {
		name string
		diff bool
	}{{"base", false}, {"diff1", true}, {"diff2", true}} {
		if err := src.PauseWhenReady(ctx, spec); err != nil {
			t.Fatal(err)
		}
		dirs[step.name] = root + "/" + step.name
		st, stats, err := src.Save(ctx, dirs[step.name], step.diff)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %v, %d pages written, %d extents", step.name, st.Kind, stats.PagesWritten, len(st.Dirty))
		if step.diff && (len(st.Dirty) == 0 || stats.PagesWritten == 0) {
			t.Fatalf("%s holds no dirty pages", step.name)
		}
		if step.name != "diff2" {
			if err := src.Resume(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A full snapshot of the same paused state, to compare the merge with.
	src.LastID = snapshot.ID{}
	full, _, err := src.Save(ctx, root+"/full", false)
	if err != nil {
		t.Fatal(err)
	}
	src.Close()

	if _, err := snapshot.Merge(ctx, dirs["base"], dirs["diff2"], root+"/bad"); !errors.Is(err, snapshot.ErrDiff) {
		t.Errorf("merging diff2 straight onto base: %v, want ErrDiff", err)
	}
	if _, err := os.Stat(root + "/bad/state"); err == nil {
		t.Error("a refused merge left a state file")
	}
	m1, err := snapshot.Merge(ctx, dirs["base"], dirs["diff1"], root+"/m1")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := snapshot.Merge(ctx, root+"/m1", dirs["diff2"], root+"/m2")
	if err != nil {
		t.Fatal(err)
	}
	if m1.Kind != snapshot.KindFull || m2.Kind != snapshot.KindFull {
		t.Fatalf("merges are %v, %v", m1.Kind, m2.Kind)
	}
	got, err := os.ReadFile(mustOpen(t, root+"/m2").MemoryPath())
	if err != nil {
		t.Fatal(err)
	}
	wantMem, err := os.ReadFile(mustOpen(t, root+"/full").MemoryPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantMem) {
		t.Fatal("base + diff1 + diff2 differs from the full snapshot of the same moment")
	}
	if m2.Machine.CPUs[0].Regs != full.Machine.CPUs[0].Regs {
		t.Fatal("merged vCPU registers differ from the full snapshot's")
	}
	// A diff cannot be restored without its base.
	if _, err := spawn(t, ctx, guestrun.Request{Dir: dirs["diff2"], Backend: snapshot.BackendCopy}); err == nil ||
		!bytes.Contains([]byte(err.Error()), []byte(snapshot.ErrDiff.Error())) {
		t.Errorf("restoring a bare diff: %v, want an ErrDiff", err)
	}
	r, err := spawn(t, ctx, guestrun.Request{Dir: root + "/m2", Backend: snapshot.BackendUFFD})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Reports) != 1 || r.Reports[0] != want {
		t.Fatalf("merged snapshot restored to %#x, want %#x", r.Reports, want)
	}
	// Merging in place replaces the base atomically.
	if _, err := snapshot.Merge(ctx, dirs["base"], dirs["diff1"], dirs["base"]); err != nil {
		t.Fatalf("in-place merge: %v", err)
	}
	if st := mustOpen(t, dirs["base"]).State; st.ID != m1.ID || st.Kind != snapshot.KindFull {
		t.Errorf("in-place merge left %s (%v)", st.ID, st.Kind)
	}
}
