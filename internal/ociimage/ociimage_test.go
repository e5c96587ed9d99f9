package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBusybox checks the layout: oci-layout, an index naming the image,
// and every blob present under its digest.
func TestBusybox(t *testing.T) {
	bb := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(bb, []byte("#!fake busybox\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := Busybox(bb, "docker.io/library/x:demo")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
	if _, ok := files["oci-layout"]; !ok {
		t.Fatal("no oci-layout")
	}
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %+v", err, index)
	}
	m := index.Manifests[0]
	if m.Annotations["io.containerd.image.name"] != "docker.io/library/x:demo" || m.Annotations["org.opencontainers.image.ref.name"] != "demo" {
		t.Errorf("annotations %v", m.Annotations)
	}
	for name, data := range files {
		if d, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && d != "" && digestOf(data) != "sha256:"+d {
			t.Errorf("blob %s has digest %s", name, digestOf(data))
		}
	}
	if _, ok := files["blobs/sha256/"+strings.TrimPrefix(m.Digest, "sha256:")]; !ok {
		t.Error("manifest blob missing")
	}
	if _, err := Busybox(filepath.Join(t.TempDir(), "none"), "x"); err == nil {
		t.Error("missing busybox gave no error")
	}
}

func TestRefName(t *testing.T) {
	for in, want := range map[string]string{"a/b:c": "c", "a:5000/b": "latest", "a:5000/b:v1": "v1", "b": "latest"} {
		if got := refName(in); got != want {
			t.Errorf("refName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBusyboxConfig checks the image configuration the options give.
func TestBusyboxConfig(t *testing.T) {
	bb := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(bb, []byte("#!fake busybox\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name               string
		opts               []Option
		wantEntry, wantCmd []string
	}{
		{"default", nil, nil, []string{"sh"}},
		{"cmd", []Option{Cmd("echo", "hi")}, nil, []string{"echo", "hi"}},
		{"entrypoint", []Option{Entrypoint("sleep"), Cmd("100")}, []string{"sleep"}, []string{"100"}},
		{"entrypoint only", []Option{Entrypoint("sh", "-c", "sleep 1"), Cmd()}, []string{"sh", "-c", "sleep 1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Busybox(bb, "x", tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			var cfg struct {
				Config struct {
					Env        []string
					Entrypoint []string
					Cmd        []string
				} `json:"config"`
			}
			found := false
			tr := tar.NewReader(bytes.NewReader(b))
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(tr)
				if strings.HasPrefix(h.Name, "blobs/") && bytes.Contains(data, []byte(`"rootfs"`)) {
					if err := json.Unmarshal(data, &cfg); err != nil {
						t.Fatal(err)
					}
					found = true
				}
			}
			if !found {
				t.Fatal("no image configuration blob")
			}
			c := cfg.Config
			if !slices.Equal(c.Entrypoint, tc.wantEntry) || !slices.Equal(c.Cmd, tc.wantCmd) || !slices.Equal(c.Env, []string{"PATH=/bin"}) {
				t.Errorf("config %+v, want entrypoint %q cmd %q", c, tc.wantEntry, tc.wantCmd)
			}
		})
	}
}
