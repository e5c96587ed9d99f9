package testguest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/memory"
)

// TestPrepareIdentity: on guest memory that is a private mapping of a
// file (as a restored snapshot's is), PrepareIdentity leaves the guest's
// bytes as they were and takes the page fault of the identity's write
// ahead of it: WriteIdentity afterwards faults no page.
func TestPrepareIdentity(t *testing.T) {
	const size = IdentityAddr + 1<<16
	path := filepath.Join(t.TempDir(), "mem")
	content := make([]byte, size)
	copy(content[IdentityAddr:], "snapshot")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	host, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	r, err := memory.NewRegionFromMapping(0, host)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memory.New(r)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()

	runtime.LockOSThread() // the fault counts below are this thread's
	defer runtime.UnlockOSThread()
	if err := PrepareIdentity(mem); err != nil {
		t.Fatal(err)
	}
	if got := string(host[IdentityAddr : IdentityAddr+8]); got != "snapshot" {
		t.Fatalf("PrepareIdentity changed the guest's bytes to %q", got)
	}
	nonce := strings.Repeat("a1", 32)
	want, _ := IdentityValue(nonce)
	// The code's own first run, on other (resident) memory.
	other := make([]byte, size)
	or, err := memory.NewRegionFromMapping(0, other)
	if err != nil {
		t.Fatal(err)
	}
	otherMem, err := memory.New(or)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteIdentity(otherMem, nonce); err != nil {
		t.Fatal(err)
	}
	faults := func() int64 {
		var ru unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
			t.Fatal(err)
		}
		return ru.Minflt + ru.Majflt
	}
	before := faults()
	if err := WriteIdentity(mem, nonce); err != nil {
		t.Fatal(err)
	}
	if n := faults() - before; n != 0 {
		t.Fatalf("WriteIdentity after PrepareIdentity took %d page faults, want 0", n)
	}
	if got, _ := mem.ReadUint64(IdentityAddr); got != want {
		t.Fatalf("identity %#x, want %#x", got, want)
	}
}
