package snapshot_test

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	tg "github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/snapshot"
	"github.com/embervm/ember/snapshot/guestrun"
	"github.com/embervm/ember/vmm/kvm"
)

// TestMain doubles as the restore child: re-executed with
// guestrun.RequestEnv set, this binary restores a snapshot in a fresh
// process and prints the result.
func TestMain(m *testing.M) {
	if handled, status := guestrun.ChildMain(); handled {
		os.Exit(status)
	}
	os.Exit(m.Run())
}

func openKVM(t testing.TB) *kvm.System {
	t.Helper()
	for _, dev := range []string{"/dev/kvm", "/dev/userfaultfd"} {
		if _, err := os.Stat(dev); err != nil {
			t.Fatalf("these tests need %s: %v", dev, err)
		}
	}
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("these tests need /dev/kvm: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

// spawn restores req in a fresh process (this test binary).
func spawn(t *testing.T, ctx context.Context, req guestrun.Request) (*guestrun.Result, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return guestrun.Spawn(ctx, []string{exe, "-test.run=^$"}, req)
}

// fileSum hashes the files of a directory (name and content).
func dirSum(t *testing.T, dir string) [32]byte {
	t.Helper()
	h := sha256.New()
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(h, filepath.Base(n))
		if _, err := io.Copy(h, f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// mixSpec is a MixProgram guest over [DataBase, DataBase+n), touching
// 8 words of each page.
func mixSpec(t *testing.T, n, passes uint64, pause time.Duration) (guestrun.Spec, uint64) {
	t.Helper()
	const step = 512
	code, err := guestrun.MixProgram(tg.DataBase, n, step, passes)
	if err != nil {
		t.Fatal(err)
	}
	mem := (tg.DataBase + n + 1<<20 - 1) &^ (1<<20 - 1)
	return guestrun.Spec{Code: code, Memory: mem, PauseAfter: pause}, guestrun.ExpectedMix(tg.DataBase, n, step, passes)
}

// wsGuest describes a working-set guest: memory, and the blocks its second
// phase touches.
type wsGuest struct {
	spec                              guestrun.Spec
	blocks, blockPages, stride, pages uint64
	want                              uint64
}

func newWSGuest(t testing.TB, mem, blocks, blockPages, stride uint64) wsGuest {
	code, err := guestrun.WorkingSetProgram(tg.DataBase, mem, blocks, blockPages, stride)
	if err != nil {
		t.Fatal(err)
	}
	return wsGuest{
		spec:   guestrun.Spec{Code: code, Memory: mem},
		blocks: blocks, blockPages: blockPages, stride: stride, pages: blocks * blockPages,
		want: guestrun.ExpectedWorkingSet(tg.DataBase, blocks, blockPages, stride),
	}
}

func mustOpen(t *testing.T, dir string) *snapshot.Snapshot {
	t.Helper()
	s, err := snapshot.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
