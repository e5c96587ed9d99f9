package cpio_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/embervm/ember/internal/cpio"
)

// entry is one parsed archive member.
type entry struct {
	name string
	mode uint32
	data string
}

// parse decodes a newc archive independently of the writer, checking the
// alignment rules the kernel relies on.
func parse(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("header at offset %d is not 4-byte aligned", off)
		}
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic at offset %d", off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		mode, size, namesize := field(1), int(field(6)), int(field(11))
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		off = align(off + 110 + namesize)
		data := string(b[off : off+size])
		off = align(off + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after trailer", len(b)-off)
			}
			return out
		}
		out = append(out, entry{name, mode, data})
	}
}

func align(n int) int { return (n + 3) &^ 3 }

func build(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	steps := []error{
		w.Mkdir("/bin", 0o755),
		w.WriteFile("/bin/tool", 0o755, []byte("#!/bin/sh\necho hi\n")),
		w.Mkdir("etc", 0o700),
		w.WriteFile("etc/empty", 0o644, nil),
		w.WriteFile("./etc/odd", 0o600, []byte("abc")), // length not a multiple of 4
		w.WriteFileFrom("etc/big", 0o644, 70000, iotest.HalfReader(strings.NewReader(strings.Repeat("x", 70001)))),
		w.Symlink("bin/sh", "busybox"),
		w.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	got := parse(t, build(t))
	want := []entry{
		{"bin", 0o040755, ""},
		{"bin/tool", 0o100755, "#!/bin/sh\necho hi\n"},
		{"etc", 0o040700, ""},
		{"etc/empty", 0o100644, ""},
		{"etc/odd", 0o100600, "abc"},
		{"etc/big", 0o100644, strings.Repeat("x", 70000)},
		{"bin/sh", 0o120777, "busybox"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d = {%q %o %d bytes}, want {%q %o %d bytes}", i,
				got[i].name, got[i].mode, len(got[i].data), want[i].name, want[i].mode, len(want[i].data))
		}
	}
}

func TestDeterministic(t *testing.T) {
	if !bytes.Equal(build(t), build(t)) {
		t.Fatal("two archives of the same entries differ")
	}
}

// TestGNUCpioExtracts checks the archive against an independent reader, GNU
// cpio, which the project's setup installs.
func TestGNUCpioExtracts(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Fatalf("cpio(1) not installed (apt-get install cpio): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(build(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	tests := []struct {
		path string
		mode fs.FileMode
		data string
		link string
	}{
		{path: "bin/tool", mode: 0o755, data: "#!/bin/sh\necho hi\n"},
		{path: "etc/odd", mode: 0o600, data: "abc"},
		{path: "etc/empty", mode: 0o644},
		{path: "etc/big", mode: 0o644, data: strings.Repeat("x", 70000)},
		{path: "bin/sh", link: "busybox"},
	}
	for _, tc := range tests {
		p := filepath.Join(dir, tc.path)
		if tc.link != "" {
			got, err := os.Readlink(p)
			if err != nil || got != tc.link {
				t.Errorf("%s: link %q, %v; want %q", tc.path, got, err, tc.link)
			}
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		if fi.Mode().Perm() != tc.mode {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode().Perm(), tc.mode)
		}
		if b, _ := os.ReadFile(p); string(b) != tc.data {
			t.Errorf("%s: %d bytes, want %d", tc.path, len(b), len(tc.data))
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		op   func(w *cpio.Writer) error
		want error
	}{
		{"empty name", func(w *cpio.Writer) error { return w.WriteFile("", 0o644, nil) }, cpio.ErrBadName},
		{"dot", func(w *cpio.Writer) error { return w.Mkdir("/./", 0o755) }, cpio.ErrBadName},
		{"dotdot", func(w *cpio.Writer) error { return w.WriteFile("a/../b", 0o644, nil) }, cpio.ErrBadName},
		{"trailer name", func(w *cpio.Writer) error { return w.WriteFile("TRAILER!!!", 0o644, nil) }, cpio.ErrBadName},
		{"nul", func(w *cpio.Writer) error { return w.Mkdir("a\x00b", 0o755) }, cpio.ErrBadName},
		{"empty link target", func(w *cpio.Writer) error { return w.Symlink("a", "") }, cpio.ErrBadName},
		{"short reader", func(w *cpio.Writer) error {
			return w.WriteFileFrom("f", 0o644, 10, strings.NewReader("abc"))
		}, cpio.ErrShortData},
		{"after close", func(w *cpio.Writer) error {
			if err := w.Close(); err != nil {
				return err
			}
			return w.Mkdir("d", 0o755)
		}, cpio.ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(cpio.NewWriter(io.Discard)); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, fmt.Errorf("disk full")
	}
	f.after--
	return len(p), nil
}

func TestWriteErrorIsSticky(t *testing.T) {
	w := cpio.NewWriter(&failWriter{after: 1})
	if err := w.Mkdir("a", 0o755); err != nil { // header + padding fit in one write
		t.Fatalf("first entry: %v", err)
	}
	if err := w.WriteFile("b", 0o644, []byte("x")); err == nil {
		t.Fatal("write to a failing writer succeeded")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a write error succeeded")
	}
}
