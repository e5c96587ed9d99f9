package labdemo

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/internal/lab/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }

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
