// Package ociimage writes small OCI image layouts for tests, demos and
// benchmarks that need a container image without a registry.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

// BusyboxApplets are linked to /bin/busybox in the image.
var BusyboxApplets = []string{"sh", "echo", "cat", "sleep", "true", "false", "ls", "ps", "wc", "head", "id", "hostname", "grep", "cut", "ip", "ping"}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// Option changes the image's configuration.
type Option func(*imageConfig)

// imageConfig is the part of the OCI image configuration the options set.
type imageConfig struct {
	Env        []string `json:"Env"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
}

// Entrypoint sets the image's entrypoint (none by default).
func Entrypoint(args ...string) Option {
	return func(c *imageConfig) { c.Entrypoint = args }
}

// Cmd sets the image's command (default: sh). With an entrypoint, these
// are its arguments; Cmd() gives none.
func Cmd(args ...string) Option {
	return func(c *imageConfig) { c.Cmd = args }
}

// Busybox returns an OCI image layout, as a tar stream for
// `ctr images import`, holding one image named name: one uncompressed
// layer with busybox (from the host file busybox, a static binary) and its
// applet links. Its configuration runs sh unless opts say otherwise (a
// CRI sandbox image, for one, needs a process that runs until killed).
func Busybox(busybox, name string, opts ...Option) ([]byte, error) {
	cfg := imageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}
	for _, o := range opts {
		o(&cfg)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	mtime := time.Unix(0, 0)
	for _, d := range []string{"bin/", "dev/", "etc/", "proc/", "sys/", "tmp/", "root/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := lw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	if err := lw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb)), ModTime: mtime}); err != nil {
		return nil, err
	}
	if _, err := lw.Write(bb); err != nil {
		return nil, err
	}
	for _, a := range BusyboxApplets {
		if err := lw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	hosts := []byte("root:x:0:0:root:/root:/bin/sh\n")
	if err := lw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(hosts)), ModTime: mtime}); err != nil {
		return nil, err
	}
	lw.Write(hosts)
	if err := lw.Close(); err != nil {
		return nil, err
	}
	layerBytes := layer.Bytes()
	layerDigest := digestOf(layerBytes)

	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: int64(len(layerBytes))}},
	})
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digestOf(manifest), Size: int64(len(manifest)),
			Annotations: map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": refName(name)},
		}},
	})

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime}); err != nil {
			return nil, err
		}
	}
	blob := func(b []byte) error { return add("blobs/sha256/"+digestOf(b)[len("sha256:"):], b) }
	for _, step := range []error{
		add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)),
		blob(layerBytes), blob(config), blob(manifest),
		add("index.json", index),
	} {
		if step != nil {
			return nil, fmt.Errorf("image tar: %w", step)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// refName is the tag part of an image name ("latest" if it has none).
func refName(name string) string {
	if i := strings.LastIndexAny(name, ":/"); i >= 0 && name[i] == ':' {
		return name[i+1:]
	}
	return "latest"
}
