package ctrbench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var d []time.Duration
		for _, x := range v {
			d = append(d, time.Duration(x)*time.Millisecond)
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1
	}
	tests := []struct {
		name string
		in   []time.Duration
		want Stats
	}{
		{"empty", nil, Stats{}},
		{"one", ms(5), Stats{1, 5 * time.Millisecond, 5 * time.Millisecond, 5 * time.Millisecond}},
		{"unsorted", ms(9, 1, 5), Stats{3, 5 * time.Millisecond, 9 * time.Millisecond, time.Millisecond}},
		{"p99 of 100 is the 99th", ms(hundred...), Stats{100, 51 * time.Millisecond, 99 * time.Millisecond, time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Summarize(tc.in); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWriteMarkdown(t *testing.T) {
	r := &Report{Runs: 2, Date: "2026-11-26", Labels: []string{"ember boot", "runc"},
		First: map[string]time.Duration{"ember boot": 3 * time.Second, "runc": time.Second},
		Samples: map[string][]time.Duration{
			"ember boot": {2 * time.Second, 4 * time.Second},
			"runc":       {time.Second, time.Second},
		}}
	var b bytes.Buffer
	r.WriteMarkdown(&b, "cmd -runs 2", "lab")
	for _, want := range []string{"Command: `cmd -runs 2`", "| ember boot | 2 | 4s | 4s | 2s | 3s |", "| runc | 2 | 1s | 1s | 1s | 1s |", "ember boot / runc: 4.00x at the median, 4.00x at p99."} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("lacks %q:\n%s", want, b.String())
		}
	}
}
