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
	fmt.Fprintln(w, "Each sample is one `ctr run --rm IMAGE ID echo hello` (containerd 2.4, busybox image, overlayfs snapshotter), from starting ctr until it exits, the container's output checked, and for ember the source the shim's log says served the VM. Variants interleaved, the order rotating every round; one warm-up each, not counted.")
	if r.Profile > 0 {
		fmt.Fprintf(w, "The restore source's snapshot profile (a booted agent VM with spare drive slots) was written once before, in %v.\n", r.Profile.Round(time.Millisecond))
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, n)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| variant | runs | median | p99 | min | warm-up |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, l := range r.Labels {
		if s := Summarize(r.Samples[l]); s.N > 0 {
			fmt.Fprintf(w, "| %s | %d | %v | %v | %v | %v |\n", l, s.N, s.Median.Round(time.Millisecond), s.P99.Round(time.Millisecond), s.Min.Round(time.Millisecond), r.First[l].Round(time.Millisecond))
		}
	}
	c := Summarize(r.Samples["runc"])
	if c.N == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, l := range r.Labels {
		if e := Summarize(r.Samples[l]); l != "runc" && e.N > 0 {
			fmt.Fprintf(w, "%s / runc: %.2fx at the median, %.2fx at p99.  \n", l,
				float64(e.Median)/float64(c.Median), float64(e.P99)/float64(c.P99))
		}
	}
}
