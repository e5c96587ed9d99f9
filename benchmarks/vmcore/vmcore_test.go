package vmcore

import (
	"context"
	"testing"
	"time"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/kvm"
)

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	s := Summarize(ds)
	if s.Median != 51 || s.P99 != 99 || s.Min != 1 || s.N != 100 {
		t.Errorf("%+v", s)
	}
}

func BenchmarkCreateVM(b *testing.B) {
	sys, err := kvm.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer sys.Close()
	b.ResetTimer()
	if _, err := CreateVM(sys, 128, b.N); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPIORoundTrip reports the time per guest port write (one exit to
// the VMM and back).
func BenchmarkPIORoundTrip(b *testing.B) {
	sys, err := kvm.Open()
	if err != nil {
		b.Fatal(err)
	}
	defer sys.Close()
	ctx := context.Background()
	code, err := testguest.PingProgram(uint64(b.N))
	if err != nil {
		b.Fatal(err)
	}
	g, err := testguest.NewMachine(ctx, sys, testguest.NewImage(code, testguest.MinMemory), testguest.Options{}, false)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	b.ResetTimer()
	if err := g.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := g.Wait(ctx, time.Now()); err != nil {
		b.Fatal(err)
	}
}
