package snapshotbench

import (
	"testing"
)

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if m, p := quantile(xs, 0.5), quantile(xs, 0.99); m != 3 || p != 5 {
		t.Errorf("median %v p99 %v", m, p)
	}
}

func TestWorkingSetSpec(t *testing.T) {
	_, pages, err := WorkingSetSpec(128<<20, 10)
	if err != nil || pages != 3264 {
		t.Errorf("128 MiB at 10%%: %d pages, %v", pages, err)
	}
	if _, _, err := WorkingSetSpec(128<<20, 0); err == nil {
		t.Error("0% accepted")
	}
}
