package labtest

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// progress passes the inner test binary's -test.v output through to w and
// notes which top-level tests have finished, so that after an L1 freeze only
// the tests without a result run again.
type progress struct {
	w io.Writer

	mu      sync.Mutex
	partial []byte          // an unfinished line
	done    map[string]bool // top-level tests with a PASS, FAIL or SKIP line
	failed  []string        // top-level tests that failed
	running string          // the last top-level test started
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, done: map[string]bool{}}
}

// Write passes p on and scans it for result lines.
func (p *progress) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partial = append(p.partial, b...)
	for {
		i := bytes.IndexByte(p.partial, '\n')
		if i < 0 {
			break
		}
		p.line(string(p.partial[:i]))
		p.partial = p.partial[i+1:]
	}
	return n, err
}

// line notes a top-level test's start or result. Result lines of
// top-level tests start in column 0 (subtests' are indented); under
// test2json (-test.v=test2json) framing lines start with ^V.
func (p *progress) line(l string) {
	l = strings.TrimPrefix(strings.TrimRight(l, "\r"), "\x16")
	if name, ok := strings.CutPrefix(l, "=== RUN   "); ok && !strings.Contains(name, "/") {
		p.running = strings.TrimSpace(name)
		return
	}
	for _, verdict := range []string{"--- PASS: ", "--- FAIL: ", "--- SKIP: "} {
		rest, ok := strings.CutPrefix(l, verdict)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, " ")
		if strings.Contains(name, "/") {
			return
		}
		p.done[name] = true
		if verdict == "--- FAIL: " {
			p.failed = append(p.failed, name)
		}
		return
	}
}

// left returns the tests among names without a result yet, in order.
func (p *progress) left(names []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, n := range names {
		if !p.done[n] {
			out = append(out, n)
		}
	}
	return out
}

// failures returns the top-level tests that failed so far.
func (p *progress) failures() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.failed...)
}

// current returns the last top-level test that started.
func (p *progress) current() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running
}
