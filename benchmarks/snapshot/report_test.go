package snapshotbench

import (
	"os"
	"path/filepath"
	"testing"
)

func TestUpdateDoc(t *testing.T) {
	tests := []struct {
		name, before, want string
	}{
		{"new file", "", "# Benchmarks\n\n## Snapshot restore\n\nT\n"},
		{"append", "# B\n\n## Core\n\nx\n", "# B\n\n## Core\n\nx\n\n## Snapshot restore\n\nT\n"},
		{"replace last", "# B\n\n## Snapshot restore\n\nold\n", "# B\n\n## Snapshot restore\n\nT\n"},
		{"replace middle", "# B\n\n## Snapshot restore\n\nold\nold\n\n## Pool\n\np\n", "# B\n\n## Snapshot restore\n\nT\n\n## Pool\n\np\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "b.md")
			if tt.before != "" {
				os.WriteFile(p, []byte(tt.before), 0o644)
			}
			if err := UpdateDoc(p, "T"); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(p)
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

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
