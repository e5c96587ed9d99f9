package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embervm/ember/images/initramfs"
	"github.com/embervm/ember/internal/fixtures"
	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
)

// Fixtures: built on the host by TestMain and copied into L1 at these
// paths (the tests run in the lab, or natively where KVM runs guest
// kernels, where the host paths are used).
var (
	kernelPath     = "/fixtures/e2e/vmlinux"
	devicesInitrd  = "/fixtures/e2e/devices.cpio.gz"
	agentInitrd    = "/fixtures/e2e/agent.cpio.gz"
	rootfsImage    = "/fixtures/e2e/busybox-rootfs.ext4"
	agentBinary    = "/fixtures/e2e/ember-agent"
	fixtureTimeout = 30 * time.Minute
)

// devicesScript drives the device checks in the guest; it runs under the
// placeholder init (images/placeholder-init) with busybox. Lines starting
// with "E2E-" are what the test reads from the console. The agent at the
// end serves vsock port 1024 (not as PID 1) until the host calls
// Shutdown; busybox's poweroff then signals PID 1, which ends the VM.
const devicesScript = `
echo "E2E-RO vda=$(cat /sys/block/vda/ro) vdb=$(cat /sys/block/vdb/ro)"
echo "E2E-SERIAL vdb=$(cat /sys/block/vdb/serial)"
echo "E2E-SECTORS vda=$(cat /sys/block/vda/size) vdb=$(cat /sys/block/vdb/size)"
echo "E2E-VDA-SHA $(sha256sum /dev/vda)"
dd if=/dev/zero of=/dev/vda bs=4096 count=1 conv=fsync 2>/dev/null
echo "E2E-RO-WRITE $?"
dd if=/dev/vda of=/dev/vdb bs=4096 seek=256 conv=fsync 2>/dev/null
echo "E2E-DD $?"
sync
echo 3 > /proc/sys/vm/drop_caches
echo "E2E-VDB-SHA $(dd if=/dev/vdb bs=4096 skip=256 count=256 2>/dev/null | sha256sum)"
echo "E2E-VDB-DIRECT-SHA $(dd if=/dev/vdb bs=1048576 skip=1 count=1 iflag=direct 2>/dev/null | sha256sum)"
echo "E2E-RNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current)"
echo "E2E-HWRNG $(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
ip link set lo up
ip link set eth0 up
ip addr add 172.30.0.2/24 dev eth0
echo "E2E-MAC $(cat /sys/class/net/eth0/address)"
ping -c 2 -W 3 172.30.0.1 >/dev/null
echo "E2E-PING $?"
ping -c 1 -s 1400 -W 3 172.30.0.1 >/dev/null
echo "E2E-PING-1400 $?"
echo E2E-AGENT-START
/bin/ember-agent -listen vsock://1024 -state-dir /tmp/agent-state
echo "E2E-AGENT-EXIT $?"
poweroff
sleep 600
echo E2E-STILL-RUNNING
`

func TestMain(m *testing.M) {
	if labtest.InLab() {
		watchdog()
		labtest.Main(m)
		return
	}
	native, _ := labtest.NativeKVM()
	dir, err := os.MkdirTemp("", "ember-e2e-")
	if err == nil {
		err = buildFixtures(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e tests: fixtures:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	files := []lab.File{
		{HostPath: kernelPath, GuestPath: "/fixtures/e2e/vmlinux"},
		{HostPath: devicesInitrd, GuestPath: "/fixtures/e2e/devices.cpio.gz"},
		{HostPath: agentInitrd, GuestPath: "/fixtures/e2e/agent.cpio.gz"},
		{HostPath: rootfsImage, GuestPath: "/fixtures/e2e/busybox-rootfs.ext4"},
		{HostPath: agentBinary, GuestPath: "/fixtures/e2e/ember-agent"},
	}
	if native && os.Getenv(labtest.ModeEnv) != "force" {
		files = nil // the tests run here, on the host paths
	}
	code := labtest.Run(m, labtest.WithFiles(files...))
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildFixtures builds the guest kernel (cached), the initramfs images and
// the busybox rootfs image into dir and points the fixture paths at them.
func buildFixtures(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), fixtureTimeout)
	defer cancel()
	kdir, err := fixtures.Kernel(ctx)
	if err != nil {
		return err
	}
	kernelPath = filepath.Join(kdir, "vmlinux")
	if agentInitrd, err = fixtures.AgentInitrd(ctx, dir); err != nil {
		return err
	}
	agentBinary = filepath.Join(dir, "ember-agent")
	devDir := filepath.Join(dir, "devices")
	if err := os.Mkdir(devDir, 0o755); err != nil {
		return err
	}
	devicesInitrd, err = fixtures.PlaceholderInitrd(ctx, devDir,
		initramfs.File{Guest: "/bin/ember-agent", Host: agentBinary, Mode: 0o755},
		initramfs.File{Guest: "/e2e/devices.sh", Data: []byte(devicesScript), Mode: 0o755},
	)
	if err != nil {
		return err
	}
	rootfsImage, err = fixtures.BusyboxRootfsImage(ctx, dir)
	return err
}

// watchdog starts a process (busybox, outside the Go runtime) that, shortly
// before the inner test timeout, prints what L1 and this test process are
// doing (threads' kernel stacks, processes, memory) and sends SIGQUIT for
// the goroutine stacks (a line also goes to L1's kernel console, which
// does not depend on the lab's result channel). The test timeout's own panic needs a live Go
// runtime; this report also comes from a stuck one. The watchdog dies
// with the test process.
func watchdog() {
	timeout := 10 * time.Minute
	for _, a := range os.Args[1:] {
		if v, ok := strings.CutPrefix(a, "-test.timeout="); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				timeout = d
			}
		}
	}
	delay := max(timeout-20*time.Second, timeout/2)
	pid := os.Getpid()
	script := fmt.Sprintf(`sleep %d
echo "e2e watchdog: tests still running" > /dev/kmsg
echo "e2e watchdog: tests still running after %v; L1 state:"
cat /proc/loadavg; free
for t in /proc/%d/task/*; do echo "$t $(cat $t/comm) $(cut -d' ' -f3 $t/stat) $(cat $t/wchan)"; cat $t/stack; done
ps
kill -QUIT %d`, int(delay.Seconds()), delay, pid, pid)
	cmd := exec.Command("busybox", "sh", "-c", script)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e watchdog:", err)
	}
}
