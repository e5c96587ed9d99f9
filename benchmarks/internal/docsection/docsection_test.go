package docsection

import (
	"os"
	"path/filepath"
	"testing"
)

func TestUpdate(t *testing.T) {
	tests := []struct{ name, before, want string }{
		{"new file", "", "# Benchmarks\n\n## B\n\nnew\n"},
		{"append", "# T\n\n## A\n\na\n", "# T\n\n## A\n\na\n\n## B\n\nnew\n"},
		{"replace middle", "# T\n\n## A\n\na\n\n## B\n\nold\nold\n\n## C\n\nc\n", "# T\n\n## A\n\na\n\n## B\n\nnew\n\n## C\n\nc\n"},
		{"replace last", "# T\n\n## B\n\nold\n", "# T\n\n## B\n\nnew\n"},
		{"deeper heading with the same name", "# T\n\n### B\n\nx\n", "# T\n\n### B\n\nx\n\n## B\n\nnew\n"},
		{"first line", "## B\n\nold\n\n## C\n\nc\n", "## B\n\nnew\n\n## C\n\nc\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "b.md")
			if tc.before != "" {
				if err := os.WriteFile(p, []byte(tc.before), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := Update(p, "## B", "new\n"); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(p)
			if string(got) != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
			if _, err := os.Stat(p + ".tmp"); err == nil {
				t.Error("temporary file left behind")
			}
		})
	}
	if err := Update(filepath.Join(t.TempDir(), "no", "dir.md"), "## B", "x"); err == nil {
		t.Error("no error for a missing directory")
	}
}
