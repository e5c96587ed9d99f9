package container

import (
	"os"
	"path/filepath"
	"testing"
)

func TestResolveInRoot(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755))
	must(os.Symlink("/usr/lib", filepath.Join(root, "lib")))
	must(os.Symlink("../../../../etc", filepath.Join(root, "escape")))
	must(os.Symlink("/", filepath.Join(root, "top")))
	must(os.Symlink("loop2", filepath.Join(root, "loop1")))
	must(os.Symlink("loop1", filepath.Join(root, "loop2")))
	tests := []struct {
		in, want string
		err      bool
	}{
		{"/proc", "/proc", false},
		{"lib/x", "/usr/lib/x", false},
		{"/escape/passwd", "/etc/passwd", false},
		{"/top/../../etc", "/etc", false},
		{"/a/../../b", "/b", false},
		{"/loop1/x", "", true},
	}
	for _, tc := range tests {
		got, err := resolveInRoot(root, tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("resolveInRoot(%q) = %q, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != filepath.Join(root, tc.want) {
			t.Errorf("resolveInRoot(%q) = %q, %v; want %q", tc.in, got, err, filepath.Join(root, tc.want))
		}
	}
}
