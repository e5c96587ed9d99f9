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
	fmt.Fprintf(w, "| source | concurrency | claims | median | p99 | min | daemon: median total (get VMM + identify & resume) |\n|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		s := row.Stats
		fmt.Fprintf(w, "| %s | %d | %d | %v | %v | %v | %v (%v + %v) |\n", row.Source, row.Concurrency, s.N,
			s.Median.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.Min.Round(time.Microsecond),
			row.Daemon.Median.Round(time.Microsecond), row.Get.Median.Round(time.Microsecond), row.Identify.Median.Round(time.Microsecond))
	}
	fmt.Fprintln(w)
	for _, conc := range o.Concurrency {
		var p, c *Row
		for i := range r.Rows {
			if r.Rows[i].Concurrency == conc {
				switch r.Rows[i].Source {
				case "pool":
					p = &r.Rows[i]
				case "cold restore":
					c = &r.Rows[i]
				}
			}
		}
		if p != nil && c != nil && p.Stats.Median > 0 && p.Stats.P99 > 0 {
			fmt.Fprintf(w, "Concurrency %d: pool claim %.1fx faster than a cold restore at the median, %.1fx at p99.\n", conc,
				float64(c.Stats.Median)/float64(p.Stats.Median), float64(c.Stats.P99)/float64(p.Stats.P99))
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
