package labdemo

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
)

func TestMain(m *testing.M) {
	labtest.Main(m, labtest.WithConfig(func(c *lab.Config) {
		if os.Getenv(FreezeEnv) == "1" {
			c.FreezeTimeout = FreezeTimeout
		}
	}))
}

// KVM ioctls (include/uapi/linux/kvm.h).
const (
	kvmGetAPIVersion = 0xae00
	kvmCreateVM      = 0xae01
)

// TestHostSide runs wherever the package's tests run.
func TestHostSide(t *testing.T) {
	if labtest.InLab() {
		t.Fatal("a host-side test ran inside the lab; labtest.Main should have selected only native tests")
	}
}

// TestNativeKVM checks that the KVM it runs with is real: API version 12,
// a VM can be created, and the CPU advertises hardware virtualization.
func TestNativeKVM(t *testing.T) {
	if ok, why := labtest.NativeKVM(); !ok {
		t.Fatalf("native test running without native KVM: %s", why)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v, err := unix.IoctlRetInt(int(f.Fd()), kvmGetAPIVersion)
	if err != nil || v != 12 {
		t.Fatalf("KVM_GET_API_VERSION = %d, %v; want 12", v, err)
	}
	vm, err := unix.IoctlRetInt(int(f.Fd()), kvmCreateVM)
	if err != nil {
		t.Fatalf("KVM_CREATE_VM: %v", err)
	}
	unix.Close(vm)
}

// TestNativeFreeze freezes L1 on purpose in the first L1 of a run when
// FreezeEnv=1: a busy loop at the highest real-time priority, with RT
// throttling off, keeps every other task of L1's one CPU, the lab agent's
// heartbeat included, from running again.
func TestNativeFreeze(t *testing.T) {
	if os.Getenv(FreezeEnv) != "1" {
		t.Skipf("runs only with %s=1 (labtest checks that a frozen L1 is replaced)", FreezeEnv)
	}
	if a := os.Getenv(labtest.AttemptEnv); a != "1" {
		t.Logf("L1 run %s: not freezing again", a)
		return
	}
	if err := os.WriteFile("/proc/sys/kernel/sched_rt_runtime_us", []byte("-1"), 0); err != nil {
		t.Fatal(err)
	}
	spin := exec.Command("sh", "-c", "while :; do :; done")
	if err := spin.Start(); err != nil {
		t.Fatal(err)
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 99}
	if err := unix.SchedSetAttr(spin.Process.Pid, &attr, 0); err != nil {
		spin.Process.Kill()
		t.Fatal(err)
	}
	spin.Wait()
	t.Fatal("L1 did not freeze")
}

// TestNativeTestdata checks that the package's testdata came along and the
// working directory is the package's, as go test arranges on the host.
func TestNativeTestdata(t *testing.T) {
	b, err := os.ReadFile("testdata/fixture.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "fixture for labdemo" {
		t.Fatalf("fixture = %q", got)
	}
}

// TestNativeDeliberateFailure fails on purpose when FailEnv=1.
func TestNativeDeliberateFailure(t *testing.T) {
	if os.Getenv(FailEnv) != "1" {
		t.Skipf("runs only with %s=1 (labtest checks that it fails the outer run)", FailEnv)
	}
	t.Fatal(FailMarker)
}

// TestNativeHang blocks forever when HangEnv=1, so that labtest's tests can
// check that a hung inner test is ended by its timeout.
func TestNativeHang(t *testing.T) {
	if os.Getenv(HangEnv) != "1" {
		t.Skipf("runs only with %s=1 (labtest checks that a hung inner test is ended)", HangEnv)
	}
	select {}
}
