package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// member is one parsed newc entry.
type member struct {
	name string
	mode uint32
	data string
}

// parseNewc reads a newc archive (the test's own minimal reader).
func parseNewc(t *testing.T, b []byte) []member {
	t.Helper()
	var ms []member
	for {
		if len(b) < 110 || string(b[:6]) != "070701" {
			t.Fatalf("bad header at %d bytes from the end", len(b))
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		mode, size, nameLen := field(1), field(6), field(11)
		name := string(b[110 : 110+nameLen-1])
		off := (110 + nameLen + 3) &^ 3
		data := string(b[off : off+size])
		b = b[(off+size+3)&^3:]
		if name == "TRAILER!!!" {
			return ms
		}
		ms = append(ms, member{name, uint32(mode), data})
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	host := filepath.Join(dir, "agent")
	if err := os.WriteFile(host, []byte("#!agent"), 0o750); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Init:     File{Data: []byte("init-binary")},
		Files:    []File{{Guest: "/usr/bin/agent", Host: host}, {Guest: "/etc/hostname", Data: []byte("vm\n"), Mode: 0o600}},
		Dirs:     []string{"/mnt/rootfs"},
		Symlinks: []Symlink{{Guest: "/bin", Target: "usr/bin"}},
	}
	for _, compress := range []bool{false, true} {
		var buf bytes.Buffer
		if err := Write(&buf, spec, compress); err != nil {
			t.Fatal(err)
		}
		raw := buf.Bytes()
		if compress {
			zr, err := gzip.NewReader(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if raw, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		ms := parseNewc(t, raw)
		got := map[string]member{}
		index := map[string]int{}
		for i, m := range ms {
			got[m.name] = m
			index[m.name] = i
		}
		want := []member{
			{"init", 0o100755, "init-binary"},
			{"usr/bin/agent", 0o100750, "#!agent"},
			{"etc/hostname", 0o100600, "vm\n"},
			{"bin", 0o120777, "usr/bin"},
			{"usr", 0o40755, ""},
			{"usr/bin", 0o40755, ""},
			{"mnt/rootfs", 0o40755, ""},
			{"dev", 0o40755, ""},
			{"proc", 0o40755, ""},
		}
		for _, w := range want {
			if g, ok := got[w.name]; !ok || g != w {
				t.Errorf("compress=%v: %s = %+v, want %+v", compress, w.name, g, w)
			}
		}
		if index["usr"] > index["usr/bin"] || index["usr/bin"] > index["usr/bin/agent"] {
			t.Errorf("directories not before their contents: %v", index)
		}
	}
	// Deterministic.
	var a, b bytes.Buffer
	Write(&a, spec, true)
	Write(&b, spec, true)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("two builds differ")
	}
}

func TestWriteErrors(t *testing.T) {
	init := File{Data: []byte("x")}
	tests := []struct {
		name string
		spec Spec
		want error
	}{
		{"no init", Spec{}, ErrNoInit},
		{"relative path", Spec{Init: init, Files: []File{{Guest: "etc/x", Data: []byte{}}}}, ErrPath},
		{"root path", Spec{Init: init, Files: []File{{Guest: "/", Data: []byte{}}}}, ErrPath},
		{"duplicate", Spec{Init: init, Files: []File{{Guest: "/a", Data: []byte{}}, {Guest: "/a/../a", Data: []byte{}}}}, ErrPath},
		{"file as parent", Spec{Init: init, Files: []File{{Guest: "/a", Data: []byte{}}, {Guest: "/a/b", Data: []byte{}}}}, ErrPath},
		{"both sources", Spec{Init: init, Files: []File{{Guest: "/a", Host: "/etc/hostname", Data: []byte{}}}}, ErrSource},
		{"directory as file", Spec{Init: init, Files: []File{{Guest: "/a", Host: "/etc"}}}, ErrSource},
		{"missing host file", Spec{Init: init, Files: []File{{Guest: "/a", Host: "/nonexistent/x"}}}, os.ErrNotExist},
	}
	for _, tt := range tests {
		if err := Write(io.Discard, tt.spec, false); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "initrd.cpio.gz")
	if err := WriteFile(dst, Spec{Init: File{Data: []byte("x")}}, true); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(dst, Spec{Init: File{Host: "/nonexistent"}}, true); err == nil {
		t.Fatal("bad spec succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "initrd.cpio.gz" {
		t.Fatalf("directory holds %v", ents)
	}
}
