// Package poolbench measures the warm pool: claim-to-running latency from
// the pool against a cold start of the same profile in the same run, at
// concurrency 1 and 8, and the memory an idle pooled VMM costs.
package poolbench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/embervm/ember/benchmarks/vmcore"
	"github.com/embervm/ember/pool"
	"github.com/embervm/ember/vmm/api"
)

// Options configure a run.
type Options struct {
	// Ember is the ember binary.
	Ember string
	// VMMArgs make the VM (the profile), e.g. a test guest or a restore.
	VMMArgs []string
	// MemoryMiB of the profile's VMs.
	MemoryMiB uint64
	// Runs per measurement.
	Runs int
	// Concurrency levels to measure.
	Concurrency []int
}

// Row is one measured configuration.
type Row struct {
	Source      string // pool or cold
	Concurrency int
	Stats       vmcore.Stats
}

// Report is the result of Run.
type Report struct {
	Rows []Row
	// IdleRSS is the resident memory of an idle pooled VMM (median).
	IdleRSS uint64
	// GuestTouched is how much guest memory such a VMM has touched.
	GuestMiB uint64
}

// Run measures.
func Run(ctx context.Context, o Options) (*Report, error) {
	rep := &Report{GuestMiB: o.MemoryMiB}
	for _, conc := range o.Concurrency {
		for _, cold := range []bool{false, true} {
			ds, rss, err := measure(ctx, o, conc, cold)
			if err != nil {
				return nil, err
			}
			src := "pool"
			if cold {
				src = "cold start"
			} else if rss > 0 && rep.IdleRSS == 0 {
				rep.IdleRSS = rss
			}
			rep.Rows = append(rep.Rows, Row{Source: src, Concurrency: conc, Stats: vmcore.Summarize(ds)})
		}
	}
	return rep, nil
}

// measure claims o.Runs VMs in rounds of conc concurrent claims, each with
// resume, and returns the claim-to-running latencies.
func measure(ctx context.Context, o Options, conc int, cold bool) ([]time.Duration, uint64, error) {
	dir, err := os.MkdirTemp("", "ember-poolbench-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(dir)
	size := conc
	if cold {
		size = 0
	}
	m, err := pool.New(pool.Config{
		Ember: o.Ember, RunDir: filepath.Join(dir, "run"),
		Profiles: []pool.Profile{{Name: "b", Size: size, MemoryMiB: o.MemoryMiB, VMMArgs: o.VMMArgs}},
	}, nil)
	if err != nil {
		return nil, 0, err
	}
	defer m.Close()
	var ds []time.Duration
	var rss uint64
	for len(ds) < o.Runs {
		if !cold {
			if err := waitReady(ctx, m, conc); err != nil {
				return nil, 0, err
			}
			time.Sleep(50 * time.Millisecond) // let the refill settle
			if rss == 0 {
				rss = idleRSS(m)
			}
		}
		claims := make([]*pool.Claim, conc)
		errs := make([]error, conc)
		var wg sync.WaitGroup
		for i := 0; i < conc; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				claims[i], errs[i] = m.Claim(ctx, "b", pool.ClaimOptions{Resume: true})
			}()
		}
		wg.Wait()
		for i, c := range claims {
			if errs[i] != nil {
				return nil, 0, errs[i]
			}
			want := "pool"
			if cold {
				want = "cold"
			}
			if c.Source != want {
				return nil, 0, fmt.Errorf("poolbench: claim came from %s, want %s", c.Source, want)
			}
			ds = append(ds, c.Total)
			stop(ctx, c)
		}
	}
	return ds, rss, nil
}

func waitReady(ctx context.Context, m *pool.Manager, n int) error {
	deadline := time.Now().Add(time.Minute)
	for m.Status()[0].Ready < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("poolbench: pool not ready: %+v", m.Status())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func stop(ctx context.Context, c *pool.Claim) {
	cl := api.NewClient(c.Socket)
	defer cl.Close()
	cl.Action(ctx, api.ActionStop)
	cl.Wait(ctx)
}

// idleRSS returns the median VmRSS of the pool's ready VMMs.
func idleRSS(m *pool.Manager) uint64 {
	var vals []uint64
	for _, pid := range m.ReadyPIDs() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				vals = append(vals, kb<<10)
			}
		}
	}
	if len(vals) == 0 {
		return 0
	}
	for i := range vals {
		for j := i + 1; j < len(vals); j++ {
			if vals[j] < vals[i] {
				vals[i], vals[j] = vals[j], vals[i]
			}
		}
	}
	return vals[len(vals)/2]
}

// WriteMarkdown writes the report as a table.
func (r *Report) WriteMarkdown(w io.Writer) {
	fmt.Fprintf(w, "| source | concurrency | claims | median | p99 | min |\n|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		s := row.Stats
		fmt.Fprintf(w, "| %s | %d | %d | %v | %v | %v |\n", row.Source, row.Concurrency, s.N,
			s.Median.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.Min.Round(time.Microsecond))
	}
	for _, conc := range []int{1, 8} {
		var p, c *Row
		for i := range r.Rows {
			if r.Rows[i].Concurrency == conc {
				if r.Rows[i].Source == "pool" {
					p = &r.Rows[i]
				} else {
					c = &r.Rows[i]
				}
			}
		}
		if p != nil && c != nil && p.Stats.Median > 0 {
			fmt.Fprintf(w, "\nConcurrency %d: pool claim is %.1fx faster than a cold start (medians), %.1fx at p99.\n", conc,
				float64(c.Stats.Median)/float64(p.Stats.Median), float64(c.Stats.P99)/float64(p.Stats.P99))
		}
	}
	fmt.Fprintf(w, "\nIdle pooled VMM: %.1f MiB resident (guest memory %d MiB, mostly untouched).\n", float64(r.IdleRSS)/(1<<20), r.GuestMiB)
}
