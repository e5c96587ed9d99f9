// Package vmcore measures the VMM core on the host's KVM: creating a VM
// ready to run (KVM_CREATE_VM, guest memory, irqchip, one vCPU) and the
// round trip of a port-I/O exit (guest to VMM and back).
package vmcore

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm"
	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

// Stats summarizes repeated measurements.
type Stats struct {
	N                int
	Median, P99, Min time.Duration
	Mean             time.Duration
}

// Summarize computes Stats of ds.
func Summarize(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	p99 := s[min(len(s)-1, (len(s)*99+99)/100-1)]
	return Stats{N: len(s), Median: s[len(s)/2], P99: p99, Min: s[0], Mean: sum / time.Duration(len(s))}
}

// CreateVM creates and closes a VM with memMiB of memory and one vCPU, n
// times, and returns how long each creation took (not counting Close).
func CreateVM(sys *kvm.System, memMiB uint64, n int) ([]time.Duration, error) {
	var ds []time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		mem, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: memMiB << 20})
		if err != nil {
			return nil, err
		}
		m, err := vmm.New(sys, vmm.Config{VCPUs: 1, Memory: mem})
		if err != nil {
			mem.Close()
			return nil, err
		}
		ds = append(ds, time.Since(t0))
		if err := m.Close(); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// PIORoundTrip runs a guest that makes pings port writes per run, runs it n
// times, and returns the time per round trip of each run.
func PIORoundTrip(ctx context.Context, sys *kvm.System, pings uint64, n int) ([]time.Duration, error) {
	code, err := testguest.PingProgram(pings)
	if err != nil {
		return nil, err
	}
	img := testguest.NewImage(code, testguest.MinMemory)
	var ds []time.Duration
	for i := 0; i < n; i++ {
		g, err := testguest.NewMachine(ctx, sys, img, testguest.Options{}, false)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := g.Start(ctx); err != nil {
			g.Close()
			return nil, err
		}
		res, err := g.Wait(ctx, t0)
		g.Close()
		if err != nil {
			return nil, err
		}
		if g.Ports.Pings() != pings {
			return nil, fmt.Errorf("vmcore: guest made %d pings, want %d", g.Ports.Pings(), pings)
		}
		ds = append(ds, res.Elapsed/time.Duration(pings))
	}
	return ds, nil
}

// Report runs both measurements and writes a markdown table to w.
func Report(ctx context.Context, w io.Writer, runs int) error {
	sys, err := kvm.Open()
	if err != nil {
		return err
	}
	defer sys.Close()
	fmt.Fprintf(w, "| measurement | runs | median | p99 | min |\n|---|---|---|---|---|\n")
	for _, mib := range []uint64{128, 1024} {
		ds, err := CreateVM(sys, mib, runs)
		if err != nil {
			return err
		}
		s := Summarize(ds)
		fmt.Fprintf(w, "| VM creation (KVM_CREATE_VM + irqchip + %d MiB memory + 1 vCPU) | %d | %v | %v | %v |\n",
			mib, s.N, s.Median.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.Min.Round(time.Microsecond))
	}
	const pings = 2000
	ds, err := PIORoundTrip(ctx, sys, pings, runs)
	if err != nil {
		return err
	}
	s := Summarize(ds)
	fmt.Fprintf(w, "| PIO round trip (guest `out` → VMM → guest), per exit, %d exits a run | %d | %v | %v | %v |\n",
		pings, s.N, s.Median.Round(100*time.Nanosecond), s.P99.Round(100*time.Nanosecond), s.Min.Round(100*time.Nanosecond))
	return nil
}
