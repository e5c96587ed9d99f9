package testguest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/bus"
	"github.com/embervm/ember/vmm/kvm"
)

func openKVM(t testing.TB) *kvm.System {
	t.Helper()
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

func mustCode(t testing.TB) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func TestSumGuest(t *testing.T) {
	sys := openKVM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 8 << 20
	// First fill memory from the guest, then sum it in a second program run
	// against host-written data.
	code := mustCode(t)(SumProgram(DataBase, n))
	img := NewImage(code, 16<<20)
	g, err := NewMachine(ctx, sys, img, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var want uint64
	for i := uint64(0); i < n/8; i++ {
		v := i*0x9e3779b97f4a7c15 + 7
		want += v
		if err := g.Memory().WriteUint64(DataBase+8*i, v); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := g.Wait(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reports) != 1 || res.Reports[0] != want {
		t.Fatalf("reports %x, want [%x]", res.Reports, want)
	}
	t.Logf("summed %d MiB in %v with %d exits", n>>20, res.Elapsed, res.Exits)
}

func TestFillGuest(t *testing.T) {
	sys := openKVM(t)
	ctx := context.Background()
	const n = 1 << 20
	res, err := Run(ctx, sys, NewImage(mustCode(t)(FillProgram(DataBase, n, 3, 5)), 8<<20), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := ExpectedFillSum(n, 3, 5); len(res.Reports) != 1 || res.Reports[0] != want {
		t.Fatalf("reports %v want %d", res.Reports, want)
	}
}

func TestMMIOGuest(t *testing.T) {
	sys := openKVM(t)
	ctx := context.Background()
	g, err := NewMachine(ctx, sys, NewImage(mustCode(t)(MMIOProgram()), 8<<20), Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Start(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := g.Wait(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []uint64{MMIOMagic, 0x1111 + 0x2222 + 0x3333}
	if len(res.Reports) != 2 || res.Reports[0] != want[0] || res.Reports[1] != want[1] {
		t.Fatalf("reports %#x, want %#x", res.Reports, want)
	}
	if r, w := g.MMIO.Accesses(); r != 4 || w != 3 {
		t.Errorf("device saw %d reads, %d writes; want 4, 3", r, w)
	}
	if g.MMIO.Reg(2) != 0x2222 {
		t.Errorf("register 2 = %#x", g.MMIO.Reg(2))
	}
}

func TestBadGuests(t *testing.T) {
	sys := openKVM(t)
	hlt := NewAsm().Hlt()
	tests := []struct {
		name  string
		code  func() ([]byte, error)
		match func(error) bool
		want  string
	}{
		{"write outside memory", func() ([]byte, error) { return WildWriteProgram(0x80000000) },
			func(err error) bool { return errors.Is(err, bus.ErrNoDevice) }, "unclaimed address 0x80000000"},
		{"privileged instruction at CPL3 (triple fault)", hlt.Bytes,
			func(err error) bool { return errors.Is(err, vmm.ErrGuestShutdown) }, "KVM_EXIT_SHUTDOWN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := Run(ctx, sys, NewImage(mustCode(t)(tt.code()), 8<<20), Options{})
			if err == nil || !tt.match(err) || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			t.Logf("clear error: %v", err)
		})
	}
}
