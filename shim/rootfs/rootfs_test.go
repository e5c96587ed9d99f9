package rootfs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestPlanMounts(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "upper-empty")
	full := filepath.Join(dir, "upper-full")
	os.Mkdir(empty, 0o755)
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "f"), nil, 0o644)
	overlay := func(upper string, lowers string) []Mount {
		return []Mount{{Type: "overlay", Source: "overlay", Options: []string{"index=off", "workdir=/w", "upperdir=" + upper, "lowerdir=" + lowers}}}
	}

	p, err := PlanMounts(overlay(empty, "/l2:/l1"))
	if err != nil || p.Key == "" || len(p.Dirs) != 2 || p.Dirs[0] != "/l2" {
		t.Fatalf("fresh overlay: %+v %v", p, err)
	}
	p2, _ := PlanMounts(overlay(empty, "/l2:/l1"))
	p3, _ := PlanMounts(overlay(empty, "/l3:/l1"))
	if p2.Key != p.Key || p3.Key == p.Key {
		t.Errorf("keys: same layers %s/%s, other layers %s", p.Key, p2.Key, p3.Key)
	}
	if p, err := PlanMounts(overlay(full, "/l1")); err != nil || p.Key != "" || len(p.Dirs) != 2 || p.Dirs[0] != full {
		t.Errorf("overlay with a written upper: %+v %v (want uncached, upper first)", p, err)
	}
	if p, err := PlanMounts([]Mount{{Type: "bind", Source: "/snap/1", Options: []string{"rbind", "rw"}}}); err != nil || p.Key != "" || p.Dirs[0] != "/snap/1" {
		t.Errorf("bind: %+v %v", p, err)
	}
	if p, err := PlanMounts([]Mount{{Type: "ext4", Source: "/dev/loop3", Options: []string{"ro"}}}); err != nil || p.Block == nil || !p.Block.ReadOnly || p.Block.FSType != "ext4" {
		t.Errorf("block: %+v %v", p, err)
	}
	for _, bad := range [][]Mount{nil, {{Type: "nfs"}}, {{Type: "overlay"}}, {{Type: "bind"}, {Type: "bind"}}} {
		if _, err := PlanMounts(bad); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%+v: %v, want ErrUnsupported", bad, err)
		}
	}
}

func TestCopySparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, _ := os.Create(src)
	f.Truncate(8 << 20)
	f.WriteAt(bytes.Repeat([]byte{1}, 5000), 4096)
	f.WriteAt([]byte("tail"), 8<<20-4)
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := CopySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs")
	}
	var st1, st2 = statBlocks(t, src), statBlocks(t, dst)
	if st2 > st1+64 {
		t.Errorf("copy uses %d blocks, source %d: holes not kept", st2, st1)
	}
}

func TestPrepareCaches(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/sbin/mkfs.ext4"); err != nil {
			t.Skip("mkfs.ext4 not installed (e2fsprogs)")
		}
	}
	dir := t.TempDir()
	layer := filepath.Join(dir, "layer")
	os.MkdirAll(filepath.Join(layer, "bin"), 0o755)
	os.WriteFile(filepath.Join(layer, "bin", "hello"), []byte("hi"), 0o755)
	upper := filepath.Join(dir, "upper")
	os.Mkdir(upper, 0o755)
	mounts := []Mount{{Type: "overlay", Options: []string{"upperdir=" + upper, "lowerdir=" + layer}}}
	c := &Cache{Dir: filepath.Join(dir, "cache")}
	ctx := context.Background()
	var kinds []string
	for i, w := range []string{"c1", "c2"} {
		work := filepath.Join(dir, w)
		os.Mkdir(work, 0o755)
		d, res, err := c.Prepare(ctx, mounts, work)
		if err != nil {
			t.Fatal(err)
		}
		if d.Path != filepath.Join(work, "rootfs.ext4") || d.FSType != "ext4" || !d.Owned {
			t.Errorf("run %d: drive %+v", i, d)
		}
		kinds = append(kinds, res.Kind)
		if err := Cleanup(d); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(d.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Cleanup left %s", d.Path)
		}
	}
	if kinds[0] != "built" || kinds[1] != "cached" {
		t.Errorf("kinds %v, want [built cached]", kinds)
	}
	if m, _ := filepath.Glob(filepath.Join(c.Dir, "*.ext4")); len(m) != 1 {
		t.Errorf("cache holds %v", m)
	}
}
