package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`
ember = "/opt/ember"
kernel = "/k"
initrd = "/i"
memory_mib = 512
vcpus = 2
backend = "pool"
pool_socket = "/run/pool.sock"
agent_timeout = "10s"
spare_drives = 2
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Ember != "/opt/ember" || c.MemoryMiB != 512 || c.VCPUs != 2 || c.Backend != BackendPool ||
		time.Duration(c.AgentTimeout) != 10*time.Second || c.SpareDrives != 2 {
		t.Errorf("parsed %+v", c)
	}
	if c.StateDir != Default().StateDir || c.CacheDir != Default().CacheDir {
		t.Errorf("defaults lost: %+v", c)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ name, toml string }{
		{"unknown key", `memroy_mib = 5`},
		{"bad toml", `memory_mib = `},
		{"small memory", `memory_mib = 8`},
		{"zero vcpus", `vcpus = 0`},
		{"many vcpus", `vcpus = 64`},
		{"bad backend", `backend = "magic"`},
		{"pool without socket", `backend = "pool"`},
		{"restore without profile", `backend = "restore"`},
		{"bad duration", `agent_timeout = "soon"`},
		{"no kernel", `kernel = ""`},
		{"negative spare drives", `spare_drives = -1`},
		{"too many spare drives", `spare_drives = 9`},
	} {
		if _, err := Parse([]byte(tt.toml)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", tt.name, err)
		}
	}
}

func TestLoad(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Error("a missing explicit file was accepted")
	}
	p := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(p, []byte(`vcpus = 3`), 0o644)
	c, err := Load(p)
	if err != nil || c.VCPUs != 3 {
		t.Errorf("Load = %+v, %v", c, err)
	}
	t.Setenv(PathEnv, p)
	if Path() != p {
		t.Errorf("Path() = %s, want %s", Path(), p)
	}
}

func TestWithAnnotations(t *testing.T) {
	base := Default()
	for _, tt := range []struct {
		name    string
		ann     map[string]string
		mem     uint64
		vcpus   int
		wantErr bool
	}{
		{"none", nil, base.MemoryMiB, base.VCPUs, false},
		{"both", map[string]string{AnnotationMemoryMiB: "1024", AnnotationVCPUs: "4"}, 1024, 4, false},
		{"memory only", map[string]string{AnnotationMemoryMiB: "128"}, 128, base.VCPUs, false},
		{"not a number", map[string]string{AnnotationVCPUs: "two"}, 0, 0, true},
		{"out of range", map[string]string{AnnotationMemoryMiB: "1"}, 0, 0, true},
		{"negative", map[string]string{AnnotationVCPUs: "-1"}, 0, 0, true},
	} {
		c, err := base.WithAnnotations(tt.ann)
		if tt.wantErr {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want ErrInvalid", tt.name, err)
			}
			continue
		}
		if err != nil || c.MemoryMiB != tt.mem || c.VCPUs != tt.vcpus {
			t.Errorf("%s: %d MiB %d vCPUs, %v", tt.name, c.MemoryMiB, c.VCPUs, err)
		}
	}
	if base.MemoryMiB != Default().MemoryMiB {
		t.Error("WithAnnotations changed its receiver")
	}
}
