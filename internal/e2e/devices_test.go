package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/guest/api"
	"github.com/embervm/ember/guest/client"
	"github.com/embervm/ember/vmm/boot"
	"github.com/embervm/ember/vmm/devices/bootmarker"
)

const (
	diskSize    = 1 << 20 // vda: random bytes, read-only
	scratchSize = 4 << 20 // vdb: zeros, read-write
	copyOffset  = 256 * 4096
	guestMAC    = "06:e6:be:00:e2:01"
)

// TestNativeDevices boots the guest kernel with the placeholder init and
// every virtio device, and drives each with the real Linux driver (the
// guest side is devicesScript):
//   - block: vda (read-only, random content) is read whole and its sha256
//     matches the image; a write to it fails and leaves it unchanged; its
//     content is copied to vdb (read-write, serial "scratch") at 1 MiB and
//     read back after dropping caches and with one 1 MiB O_DIRECT read; on
//     the host, vdb holds exactly that copy there and zeros elsewhere;
//   - net: the guest (172.30.0.2) pings the TAP (172.30.0.1), also with
//     1400-byte payloads, and the TAP side pings the guest;
//   - rng: the kernel picked virtio_rng and /dev/hwrng gives 32 bytes;
//   - vsock: the host connects through the vsock Unix socket (CONNECT
//     1024) to the agent running in the guest, pings it over ttrpc and
//     shuts it down;
//   - the boot marker of /init (ioperm + OUT) was recorded;
//   - busybox poweroff (SIGUSR2 to PID 1) ends the VM cleanly.
func TestNativeDevices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	disk := make([]byte, diskSize)
	if _, err := rand.Read(disk); err != nil {
		t.Fatal(err)
	}
	vda := filepath.Join(dir, "vda.img")
	vdb := filepath.Join(dir, "vdb.img")
	if err := os.WriteFile(vda, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vdb, make([]byte, scratchSize), 0o644); err != nil {
		t.Fatal(err)
	}
	uds := filepath.Join(dir, "vsock.sock")
	v := startVM(t, ctx, boot.Config{
		Initrd: devicesInitrd,
		Drives: []boot.Drive{{Path: vda, ReadOnly: true, ID: "source"}, {Path: vdb, ID: "scratch"}},
		Nets: []boot.NetInterface{{HostAddr: netip.MustParsePrefix("172.30.0.1/24"),
			GuestMAC: guestMAC}},
		VCPUs:   2, // interrupts and queue notifications on an SMP guest
		RNG:     true,
		Vsock:   &boot.Vsock{GuestCID: 3, UDS: uds},
		Cmdline: "quiet -- sh /e2e/devices.sh",
	})
	sum := sha256.Sum256(disk)
	want := hex.EncodeToString(sum[:])

	t.Run("block", func(t *testing.T) {
		if m := v.expect(t, ctx, `E2E-RO vda=(\d) vdb=(\d)`); m[1] != "1" || m[2] != "0" {
			t.Errorf("read-only flags vda=%s vdb=%s, want 1 and 0", m[1], m[2])
		}
		if m := v.expect(t, ctx, `E2E-SERIAL vdb=(\S*)`); m[1] != "scratch" {
			t.Errorf("vdb serial %q, want scratch", m[1])
		}
		if m := v.expect(t, ctx, `E2E-SECTORS vda=(\d+) vdb=(\d+)`); m[1] != "2048" || m[2] != "8192" {
			t.Errorf("sizes vda=%s vdb=%s sectors, want 2048 and 8192", m[1], m[2])
		}
		if m := v.expect(t, ctx, `E2E-VDA-SHA ([0-9a-f]{64})`); m[1] != want {
			t.Errorf("guest read vda with sha256 %s, want %s", m[1], want)
		}
		if m := v.expect(t, ctx, `E2E-RO-WRITE (\d+)`); m[1] == "0" {
			t.Error("writing the read-only vda succeeded in the guest")
		}
		if m := v.expect(t, ctx, `E2E-DD (\d+)`); m[1] != "0" {
			t.Errorf("dd vda to vdb exited %s", m[1])
		}
		if m := v.expect(t, ctx, `E2E-VDB-SHA ([0-9a-f]{64})`); m[1] != want {
			t.Errorf("guest read back vdb with sha256 %s, want %s", m[1], want)
		}
		if m := v.expect(t, ctx, `E2E-VDB-DIRECT-SHA ([0-9a-f]{64})`); m[1] != want {
			t.Errorf("guest read vdb with O_DIRECT (one 1 MiB read): sha256 %s, want %s", m[1], want)
		}
	})
	t.Run("rng", func(t *testing.T) {
		if m := v.expect(t, ctx, `E2E-RNG-CURRENT (\S*)`); !strings.HasPrefix(m[1], "virtio_rng") {
			t.Errorf("current hwrng %q, want virtio_rng.N", m[1])
		}
		m := v.expect(t, ctx, `E2E-HWRNG ([0-9a-f]*)\r`)
		b, _ := hex.DecodeString(m[1])
		if len(b) != 32 || bytes.Equal(b, make([]byte, 32)) {
			t.Errorf("/dev/hwrng gave %q, want 32 random bytes", m[1])
		}
	})
	t.Run("net", func(t *testing.T) {
		if m := v.expect(t, ctx, `E2E-MAC (\S+)`); m[1] != guestMAC {
			t.Errorf("guest MAC %s, want %s", m[1], guestMAC)
		}
		if m := v.expect(t, ctx, `E2E-PING (\d+)`); m[1] != "0" {
			t.Errorf("guest ping of the TAP side exited %s", m[1])
		}
		if m := v.expect(t, ctx, `E2E-PING-1400 (\d+)`); m[1] != "0" {
			t.Errorf("guest ping with 1400-byte payloads exited %s", m[1])
		}
		v.expect(t, ctx, `E2E-AGENT-START`)
		if err := ping(t, ctx, "172.30.0.2"); err != nil {
			t.Errorf("ping of the guest from the TAP side: %v", err)
		}
	})
	t.Run("vsock", func(t *testing.T) {
		c, err := client.Dial(ctx, uds, api.DefaultVsockPort)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		payload := []byte("ember e2e over virtio-vsock")
		start := time.Now()
		r, err := c.Ping(ctx, &api.PingRequest{Payload: payload})
		if err != nil || !bytes.Equal(r.Payload, payload) {
			t.Fatalf("ping: %v %q", err, r.GetPayload())
		}
		t.Logf("vsock: host port %d, first ttrpc Ping %v", c.HostPort, time.Since(start).Round(time.Microsecond))
		if _, err := c.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if m := v.expect(t, ctx, `E2E-AGENT-EXIT (\d+)`); m[1] != "0" {
			t.Errorf("agent exited %s", m[1])
		}
	})

	took := v.waitEnd(t, ctx)
	if regexp.MustCompile(`(?m)^E2E-STILL-RUNNING`).MatchString(v.console.String()) {
		t.Error("poweroff did not end the VM")
	}
	v.expect(t, ctx, `signal user defined signal 2: restarting`)
	if mk, ok := v.mark(bootmarker.MarkInit); !ok {
		t.Errorf("boot markers %+v, want MarkInit", v.Marks())
	} else {
		t.Logf("/init after %v; VM ended after %v", mk.Elapsed.Round(time.Millisecond), took.Round(time.Millisecond))
	}
	// The disks as the guest left them.
	got, err := os.ReadFile(vda)
	if err != nil || !bytes.Equal(got, disk) {
		t.Errorf("vda changed (%v)", err)
	}
	got, err = os.ReadFile(vdb)
	if err != nil {
		t.Fatal(err)
	}
	exp := make([]byte, scratchSize)
	copy(exp[copyOffset:], disk)
	if !bytes.Equal(got, exp) {
		t.Errorf("vdb on the host: sha256 of [1M,2M) %x, rest zero: %v; want %s",
			sha256.Sum256(got[copyOffset:copyOffset+diskSize]),
			bytes.Count(got[:copyOffset], []byte{0}) == copyOffset && bytes.Count(got[copyOffset+diskSize:], []byte{0}) == scratchSize-copyOffset-diskSize,
			want)
	}
}

// TestNativeReboot: busybox reboot (SIGTERM to PID 1) ends the VM cleanly.
func TestNativeReboot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v := startVM(t, ctx, boot.Config{Initrd: devicesInitrd, Cmdline: "quiet -- reboot; sleep 600; echo E2E-STILL-RUNNING"})
	took := v.waitEnd(t, ctx)
	// (The kernel logs its command line, so the marker is looked for at the
	// start of a line.)
	out := v.console.String()
	if !strings.Contains(out, "signal terminated: restarting") || regexp.MustCompile(`(?m)^E2E-STILL-RUNNING`).MatchString(out) {
		t.Errorf("console lacks the placeholder init's restart on SIGTERM")
	}
	if _, ok := v.mark(bootmarker.MarkInit); !ok {
		t.Errorf("boot markers %+v, want MarkInit", v.Marks())
	}
	t.Logf("VM ended after %v", took.Round(time.Millisecond))
}
