package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// sysDisk writes a disk's serial and size (sectors) into a sysfs-like tree
// and its node into dev.
func sysDisk(t *testing.T, sys, dev, name, serial, sectors string) {
	t.Helper()
	d := filepath.Join(sys, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if serial != "" {
		os.WriteFile(filepath.Join(d, "serial"), []byte(serial+"\n"), 0o644)
	}
	os.WriteFile(filepath.Join(d, "size"), []byte(sectors+"\n"), 0o644)
	os.WriteFile(filepath.Join(dev, name), nil, 0o644)
}

func TestWaitBlockDevice(t *testing.T) {
	h := newHarness(t)
	sys, dev := t.TempDir(), t.TempDir()
	h.agent.cfg.SysBlock, h.agent.cfg.DevDir = sys, dev
	sysDisk(t, sys, dev, "vda", "root", "2048")
	sysDisk(t, sys, dev, "vdb", "ember-spare0", "0")
	sysDisk(t, sys, dev, "vdc", "ember-spare1", "0")
	os.MkdirAll(filepath.Join(sys, "loop0"), 0o755) // no serial: skipped

	// The slot grows a moment after the call starts, as after an attach.
	go func() {
		time.Sleep(100 * time.Millisecond)
		setSysfs(filepath.Join(sys, "vdc", "size"), "16\n")
	}()
	t0 := time.Now()
	resp, err := h.client.WaitBlockDevice(h.ctx(), &api.WaitBlockDeviceRequest{Serial: "ember-spare1", SizeBytes: 8192, TimeoutNs: uint64(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Device != filepath.Join(dev, "vdc") || resp.SizeBytes != 8192 {
		t.Fatalf("got %s, %d bytes", resp.Device, resp.SizeBytes)
	}
	if d := time.Since(t0); d < 90*time.Millisecond {
		t.Errorf("returned after %v, before the disk grew", d)
	}
	// Any size will do without size_bytes.
	if resp, err := h.client.WaitBlockDevice(h.ctx(), &api.WaitBlockDeviceRequest{Serial: "root"}); err != nil || resp.Device != filepath.Join(dev, "vda") || resp.SizeBytes != 2048*512 {
		t.Fatalf("root: %v %v", resp, err)
	}

	// After a detach the slot shrinks to 0.
	go func() {
		time.Sleep(50 * time.Millisecond)
		setSysfs(filepath.Join(sys, "vdc", "size"), "0\n")
	}()
	if resp, err := h.client.WaitBlockDevice(h.ctx(), &api.WaitBlockDeviceRequest{Serial: "ember-spare1", Empty: true, TimeoutNs: uint64(5 * time.Second)}); err != nil || resp.SizeBytes != 0 {
		t.Fatalf("wait for empty: %v %v", resp, err)
	}

	for _, tt := range []struct {
		name string
		req  *api.WaitBlockDeviceRequest
		code codes.Code
		msg  string
	}{
		{"empty slot", &api.WaitBlockDeviceRequest{Serial: "ember-spare0", TimeoutNs: uint64(50 * time.Millisecond)}, codes.DeadlineExceeded, "has 0 bytes"},
		{"not empty", &api.WaitBlockDeviceRequest{Serial: "root", Empty: true, TimeoutNs: uint64(50 * time.Millisecond)}, codes.DeadlineExceeded, "want 0 (empty)"},
		{"empty with a size", &api.WaitBlockDeviceRequest{Serial: "root", Empty: true, SizeBytes: 512}, codes.InvalidArgument, "empty with a size"},
		{"wrong size", &api.WaitBlockDeviceRequest{Serial: "ember-spare1", SizeBytes: 4096, TimeoutNs: uint64(50 * time.Millisecond)}, codes.DeadlineExceeded, "want 4096"},
		{"unknown serial", &api.WaitBlockDeviceRequest{Serial: "nope", TimeoutNs: uint64(50 * time.Millisecond)}, codes.DeadlineExceeded, "no disk with serial"},
		{"no serial", &api.WaitBlockDeviceRequest{}, codes.InvalidArgument, "serial is empty"},
		{"partial sector", &api.WaitBlockDeviceRequest{Serial: "root", SizeBytes: 100}, codes.InvalidArgument, "sectors"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.client.WaitBlockDevice(h.ctx(), tt.req)
			if s, _ := status.FromError(err); s.Code() != tt.code || !strings.Contains(s.Message(), tt.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}
}

// setSysfs replaces a fake sysfs file atomically, as a read of the real
// one never sees it half written (os.WriteFile truncates first).
func setSysfs(path, content string) {
	tmp := path + ".tmp"
	if os.WriteFile(tmp, []byte(content), 0o644) == nil {
		os.Rename(tmp, path)
	}
}
