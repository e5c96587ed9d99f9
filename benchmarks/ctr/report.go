package ctrbench

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// Heading is the section of docs/benchmarks.md this benchmark owns.
const Heading = "## Container start through containerd"

// Stats summarizes samples.
type Stats struct {
	N                int
	Median, P99, Min time.Duration
}

// Summarize returns the median, p99 (nearest rank) and minimum.
func Summarize(d []time.Duration) Stats {
	if len(d) == 0 {
		return Stats{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := (99*len(s) + 99) / 100 // ceil(0.99 n)
	return Stats{N: len(s), Median: s[len(s)/2], P99: s[rank-1], Min: s[0]}
}

// WriteMarkdown writes the report as the Heading section's body.
func (r *Report) WriteMarkdown(w io.Writer, command, where string) {
	fmt.Fprintf(w, "Command: `%s`  \n", command)
	fmt.Fprintf(w, "Where: %s, %s.  \n", where, r.Date)
	fmt.Fprintf(w, "Each sample is one `ctr run --rm IMAGE ID echo hello` (containerd 2.4, busybox image, overlayfs snapshotter), from starting ctr until it exits, the container's output checked. Runtimes interleaved; one warm-up each not counted (ember's first run also builds the rootfs image: %v).\n\n", r.FirstEmber.Round(time.Millisecond))
	fmt.Fprintln(w, "| runtime | runs | median | p99 | min |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, rt := range []string{RuntimeEmber, RuntimeRunc} {
		if s := Summarize(r.Samples[rt]); s.N > 0 {
			fmt.Fprintf(w, "| %s | %d | %v | %v | %v |\n", rt, s.N, s.Median.Round(time.Millisecond), s.P99.Round(time.Millisecond), s.Min.Round(time.Millisecond))
		}
	}
	e, c := Summarize(r.Samples[RuntimeEmber]), Summarize(r.Samples[RuntimeRunc])
	if e.N > 0 && c.N > 0 {
		fmt.Fprintf(w, "\nember / runc: %.2fx at the median, %.2fx at p99.\n",
			float64(e.Median)/float64(c.Median), float64(e.P99)/float64(c.P99))
	}
}
