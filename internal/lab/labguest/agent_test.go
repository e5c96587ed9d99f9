package labguest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{"tool": 0o755, "data": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, arg string
		env       []string
		want      string
		err       error
	}{
		{"found in the command's PATH", "tool", []string{"PATH=/nonexistent:" + dir}, filepath.Join(dir, "tool"), nil},
		{"not executable", "data", []string{"PATH=" + dir}, "", exec.ErrNotFound},
		{"default PATH does not hold it", "tool", nil, "", exec.ErrNotFound},
		{"paths are taken as given", "/some/where", nil, "/some/where", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := lookPath(tc.arg, tc.env)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Fatalf("lookPath(%q) = %q, %v; want %q, %v", tc.arg, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestMainRefusesOutsidePID1(t *testing.T) {
	if err := Main(t.Context()); !errors.Is(err, ErrNotPID1) {
		t.Fatalf("Main = %v, want ErrNotPID1", err)
	}
}
