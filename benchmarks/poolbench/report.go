package poolbench

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// WriteMarkdown writes the report as a table with the ratios the warm
// pool's targets are stated in.
func (r *Report) WriteMarkdown(w io.Writer) {
	o := r.Options
	fmt.Fprintf(w, "Snapshot: %d MiB identity test guest (%.1f%% of its memory filled), backend %s for both sources; working set %d pages.\n\n",
		o.MemoryMiB, o.FillPercent, o.Backend, r.WorkingSetPages)
	us := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return d.Round(time.Microsecond).String()
	}
	fmt.Fprintf(w, "| source | concurrency | claims | to the answer: median | p99 | min | to the guest's first report: median | p99 | min | daemon: median total (get VMM + identify & resume) |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		s, g := row.Stats, row.Running
		fmt.Fprintf(w, "| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s (%s + %s) |\n", row.Source, row.Concurrency, s.N,
			us(s.Median), us(s.P99), us(s.Min), us(g.Median), us(g.P99), us(g.Min),
			us(row.Daemon.Median), us(row.Get.Median), us(row.Identify.Median))
	}
	fmt.Fprintln(w)
	for _, conc := range o.Concurrency {
		var cold *Row
		for i := range r.Rows {
			if r.Rows[i].Concurrency == conc && r.Rows[i].Source == SourceCold {
				cold = &r.Rows[i]
			}
		}
		if cold == nil {
			continue
		}
		for _, p := range r.Rows {
			if p.Concurrency != conc || p.Source == SourceCold {
				continue
			}
			if p.Stats.Median > 0 && p.Stats.P99 > 0 {
				fmt.Fprintf(w, "Concurrency %d, claim to the answer: %s %.1fx faster than a cold restore at the median, %.1fx at p99.\n", conc, p.Source,
					float64(cold.Stats.Median)/float64(p.Stats.Median), float64(cold.Stats.P99)/float64(p.Stats.P99))
			}
			if p.Running.Median > 0 && p.Running.P99 > 0 {
				fmt.Fprintf(w, "Concurrency %d, claim to the guest's first report: %s %.1fx faster than a cold restore at the median, %.1fx at p99.\n", conc, p.Source,
					float64(cold.Running.Median)/float64(p.Running.Median), float64(cold.Running.P99)/float64(p.Running.P99))
			}
		}
	}
	m := r.Idle
	fmt.Fprintf(w, "\nIdle pooled VMM: %.1f MiB resident (VmRSS), of which %.1f MiB guest memory (the installed working set): %.1f MiB beyond guest memory, of which %.1f MiB private (not shared with the other VMMs, unlike the ember binary's pages).\n",
		mib(m.RSS), mib(m.Guest), mib(m.RSS-m.Guest), mib(m.Private))
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}
