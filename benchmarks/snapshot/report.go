package snapshotbench

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/embervm/ember/benchmarks/internal/docsection"
	"github.com/embervm/ember/snapshot"
)

func splitLines(s string) []string   { return strings.Split(s, "\n") }
func indexByte(s string, c byte) int { return strings.IndexByte(s, c) }
func trimNL(s string) string         { return strings.TrimRight(s, "\x00\n ") }
func numCPU() int                    { return runtime.NumCPU() }

// quantile returns the q-quantile (nearest rank) of xs.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (c *Cell) values(f func(*Sample) float64) []float64 {
	out := make([]float64, len(c.Samples))
	for i, s := range c.Samples {
		out[i] = f(s)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// Median and P99 of a metric.
func (c *Cell) stat(f func(*Sample) float64) (med, p99 float64) {
	v := c.values(f)
	return quantile(v, 0.5), quantile(v, 0.99)
}

func (r *Report) cell(size uint64, b snapshot.Backend) *Cell {
	for _, c := range r.Cells {
		if c.SizeMiB == size && c.Backend == b {
			return c
		}
	}
	return nil
}

// Target is one of the goals and whether this run met it.
type Target struct {
	Goal   string
	Met    bool
	Detail string
}

// Targets evaluates the goals on this report.
func (r *Report) Targets() []Target {
	var out []Target
	sizes := r.Options.SizesMiB
	small, big := sizes[0], sizes[len(sizes)-1]
	first := func(s *Sample) float64 { return ms(s.FromProcessStart) }
	if cp := r.cell(big, snapshot.BackendCopy); cp != nil {
		copyMed, _ := cp.stat(first)
		for _, b := range []snapshot.Backend{snapshot.BackendMmap, snapshot.BackendUFFD, snapshot.BackendPrefetch} {
			c, cs := r.cell(big, b), r.cell(small, b)
			if c == nil || cs == nil {
				continue
			}
			med, _ := c.stat(first)
			medSmall, _ := cs.stat(first)
			ratio := copyMed / med
			out = append(out, Target{
				Goal: fmt.Sprintf("%s: restore to first instruction ≥ 20x faster than copy at %d MiB", b, big),
				Met:  ratio >= 20, Detail: fmt.Sprintf("%.1f ms vs %.1f ms: %.1fx", med, copyMed, ratio),
			})
			growth := med / medSmall
			out = append(out, Target{
				Goal: fmt.Sprintf("%s: restore to first instruction independent of guest size", b),
				Met:  growth <= 1.5, Detail: fmt.Sprintf("%.1f ms at %d MiB, %.1f ms at %d MiB (%.2fx)", medSmall, small, med, big, growth),
			})
		}
	}
	run := func(s *Sample) float64 { return ms(s.Run) }
	for _, size := range sizes {
		u, p := r.cell(size, snapshot.BackendUFFD), r.cell(size, snapshot.BackendPrefetch)
		if u == nil || p == nil {
			continue
		}
		um, _ := u.stat(run)
		pm, _ := p.stat(run)
		out = append(out, Target{
			Goal: fmt.Sprintf("prefetch finishes the working set ≥ 5x faster than uffd at %d MiB", size),
			Met:  um/pm >= 5, Detail: fmt.Sprintf("%.1f ms vs %.1f ms: %.1fx", pm, um, um/pm),
		})
	}
	for _, c := range r.Cells {
		if c.Backend != snapshot.BackendUFFD && c.Backend != snapshot.BackendPrefetch {
			continue
		}
		limit := (c.WorkingSetPages + slackPages) * 4096
		var worst, worstFaults uint64
		for _, s := range c.Samples {
			// A page the handler served while the prefetcher was reading
			// it is read twice; both reads are inside the working set.
			extra := s.Stats.BytesRead - min(s.Stats.BytesRead, limit)
			if c.Backend == snapshot.BackendPrefetch {
				extra -= min(extra, s.Stats.FaultsServed*4096)
			}
			worst = max(worst, extra)
			worstFaults = max(worstFaults, s.Stats.BytesRead)
		}
		out = append(out, Target{
			Goal: fmt.Sprintf("%s at %d MiB reads nothing outside the working set", c.Backend, c.SizeMiB),
			Met:  worst == 0,
			Detail: fmt.Sprintf("at most %d KiB read for a %d KiB working set (+%d pages slack)",
				worstFaults>>10, c.WorkingSetPages*4, slackPages),
		})
	}
	return out
}

// WriteMarkdown writes the results table and the targets.
func (r *Report) WriteMarkdown(w io.Writer, command string) {
	fmt.Fprintf(w, "Command: `%s`  \nHost: %s  \n", command, r.Host)
	fmt.Fprintf(w, "Guests touch %.0f%% of their memory (64 KiB blocks spread evenly) after the restore; every page of the snapshot holds data. "+
		"%d fresh-process restores per cell, backends interleaved, memory file in the page cache; total %v. "+
		"Times in ms as median / p99.\n\n", r.Options.WorkingSetPercent, r.Options.Runs, r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "| guest | backend | process start → first instruction | snapshot open → first instruction | working-set phase | faults served | MiB read | RSS MiB |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|\n")
	for _, c := range r.Cells {
		a, ap := c.stat(func(s *Sample) float64 { return ms(s.FromProcessStart) })
		b, bp := c.stat(func(s *Sample) float64 { return ms(s.FromRestoreStart) })
		d, dp := c.stat(func(s *Sample) float64 { return ms(s.Run) })
		f, _ := c.stat(func(s *Sample) float64 { return float64(s.Stats.FaultsServed) })
		rd, _ := c.stat(func(s *Sample) float64 { return float64(s.Stats.BytesRead) / (1 << 20) })
		rss, _ := c.stat(func(s *Sample) float64 { return float64(s.RSSKiB) / 1024 })
		readCol := fmt.Sprintf("%.1f", rd)
		if c.Backend == snapshot.BackendMmap {
			readCol = "(page cache)"
		}
		fmt.Fprintf(w, "| %d MiB | %s | %.2f / %.2f | %.2f / %.2f | %.1f / %.1f | %.0f | %s | %.0f |\n",
			c.SizeMiB, c.Backend, a, ap, b, bp, d, dp, f, readCol, rss)
	}
	fmt.Fprintf(w, "\nTargets (this run):\n\n")
	for _, t := range r.Targets() {
		mark := "met"
		if !t.Met {
			mark = "**not met**"
		}
		fmt.Fprintf(w, "- %s: %s (%s)\n", t.Goal, mark, t.Detail)
	}
}

// Heading is the section of docs/benchmarks.md this benchmark owns.
const Heading = "## Snapshot restore"

// UpdateDoc replaces (or appends) the Heading section of the markdown file
// at path with body, leaving every other section alone.
func UpdateDoc(path, body string) error { return docsection.Update(path, Heading, body) }
