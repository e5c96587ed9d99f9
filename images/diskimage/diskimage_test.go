package diskimage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// debugfs runs a debugfs request against img.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	p, err := exec.LookPath("debugfs")
	if err != nil {
		if _, err := os.Stat("/sbin/debugfs"); err != nil {
			t.Skip("debugfs (e2fsprogs) not installed")
		}
		p = "/sbin/debugfs"
	}
	out, err := exec.Command(p, "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return string(out)
}

func requireMkfs(t *testing.T) {
	if _, err := findMkfs(""); err != nil {
		t.Skip(err)
	}
}

func TestCreate(t *testing.T) {
	requireMkfs(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "etc", "app"), 0o755)
	os.WriteFile(filepath.Join(src, "hello"), []byte("hello, ember\n"), 0o644)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	os.WriteFile(filepath.Join(src, "etc", "app", "big"), big, 0o600)
	os.Symlink("hello", filepath.Join(src, "link"))

	dst := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := Create(context.Background(), src, dst, Options{Label: "rootfs"}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	if err != nil || st.Size() < MinSize || st.Size()%(1<<20) != 0 {
		t.Fatalf("image: %v, size %d", err, st.Size())
	}
	if got := debugfs(t, dst, "cat /hello"); got != "hello, ember\n" {
		t.Errorf("cat /hello = %q", got)
	}
	if got := debugfs(t, dst, "cat /etc/app/big"); got != string(big) {
		t.Errorf("/etc/app/big: %d bytes, differs", len(got))
	}
	if got := debugfs(t, dst, "stat /link"); !strings.Contains(got, `Fast link dest: "hello"`) {
		t.Errorf("stat /link: %s", got)
	}
	if got := debugfs(t, dst, "stats"); !strings.Contains(got, "Filesystem volume name:   rootfs") {
		t.Errorf("label missing: %.300s", got)
	}
}

func TestAutoSize(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), make([]byte, 40<<20), 0o644)
	size, err := AutoSize(src, 0)
	if err != nil {
		t.Fatal(err)
	}
	if size < 40<<20*5/4+16<<20 || size%(1<<20) != 0 {
		t.Fatalf("size %d for 40 MiB of data", size)
	}
	if small, _ := AutoSize(t.TempDir(), 0); small < MinSize || small > MinSize+1<<20 {
		t.Fatalf("empty dir: %d", small)
	}
}

func TestCreateErrors(t *testing.T) {
	requireMkfs(t)
	dir := t.TempDir()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), make([]byte, 20<<20), 0o644)
	file := filepath.Join(dir, "plain")
	os.WriteFile(file, nil, 0o644)
	tests := []struct {
		name string
		src  string
		opts Options
		want error
	}{
		{"missing mkfs", src, Options{Mkfs: "/nonexistent/mkfs.ext4"}, ErrMkfsMissing},
		{"missing source", filepath.Join(dir, "nope"), Options{}, ErrSource},
		{"source is a file", file, Options{}, ErrSource},
		{"explicit size too small", src, Options{Size: MinSize}, ErrTooSmall},
		{"mkfs fails", src, Options{Mkfs: "false"}, ErrMkfs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := filepath.Join(dir, "out.ext4")
			err := Create(context.Background(), tt.src, dst, tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			// Nothing left behind: no image, no temporary file.
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if e.Name() != "plain" {
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
}
