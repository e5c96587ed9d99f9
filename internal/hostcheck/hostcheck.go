// Package hostcheck probes whether this host can run ember, and how: KVM
// access and capabilities, whether KVM runs guest kernel code natively, and
// the other kernel facilities ember uses.
package hostcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Status is one check's outcome.
type Status string

// Outcomes.
const (
	OK   Status = "ok"
	No   Status = "no"
	Info Status = "info"
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Required checks that fail make ember unable to run at all.
	Required bool `json:"required"`
}

// Report is the result of Run.
type Report struct {
	Checks []Check `json:"checks"`
	// Usable is true when ember can create and run VMs here.
	Usable bool `json:"usable"`
	// NativeKernels is true when KVM runs guest kernel (CPL0) code natively,
	// so Linux guests boot. Where it is false, Linux guests run in the
	// nested lab.
	NativeKernels bool `json:"native_kernels"`
	// Verdict is a one-line summary.
	Verdict string        `json:"verdict"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

func (r *Report) add(c Check) { r.Checks = append(r.Checks, c) }

// Run performs every check. It takes well under a second.
func Run(ctx context.Context) *Report {
	start := time.Now()
	r := &Report{}
	sys, kvmOK := checkKVM(r)
	if kvmOK {
		checkCaps(r, sys)
		native := checkNative(ctx, r, sys)
		r.NativeKernels = native
		checkCreateLatency(r, sys)
		sys.Close()
	}
	checkUserfaultfd(r)
	checkTun(r)
	checkVhostVsock(r)
	checkCgroup(r)

	r.Usable = true
	for _, c := range r.Checks {
		if c.Required && c.Status != OK {
			r.Usable = false
		}
	}
	switch {
	case !r.Usable:
		r.Verdict = "ember cannot run VMs on this host (see the failed required checks)"
	case r.NativeKernels:
		r.Verdict = "ember can run Linux guests natively on this host"
	default:
		r.Verdict = "ember runs test guests here, but Linux guests need the nested lab: `ember lab run -- CMD` (see docs/testing.md)"
	}
	r.Elapsed = time.Since(start)
	return r
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintln(w, "ember check: can this host run ember?")
	for _, c := range r.Checks {
		req := ""
		if c.Required {
			req = " (required)"
		}
		fmt.Fprintf(w, "  [%-4s] %-22s %s%s\n", c.Status, c.Name, c.Detail, req)
	}
	fmt.Fprintf(w, "verdict: %s\n", r.Verdict)
	fmt.Fprintf(w, "checked in %v\n", r.Elapsed.Round(time.Millisecond))
}

// WriteJSON prints the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
