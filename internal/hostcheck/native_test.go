package hostcheck

import (
	"context"
	"encoding/json"
	"os/exec"
	"testing"
	"time"

	"github.com/embervm/ember/internal/lab"
	"github.com/embervm/ember/internal/lab/labtest"
	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/kvm"
)

// TestMain sends the TestNative* tests to the nested lab on hosts whose KVM
// cannot run guest kernels.
func TestMain(m *testing.M) { labtest.Main(m) }

// TestNativeCheckReportsNative runs `ember check` where KVM runs guest
// kernels natively (in the lab: L1's kvm-amd with nested paging) and expects
// it to say so.
func TestNativeCheckReportsNative(t *testing.T) {
	r := Run(context.Background())
	if !r.Usable || !r.NativeKernels {
		t.Fatalf("check: usable=%v native=%v: %+v", r.Usable, r.NativeKernels, r.Checks)
	}
	for _, c := range r.Checks {
		if c.Name == "native guest kernels" {
			t.Logf("%s: %s", c.Name, c.Detail)
		}
	}
	// The CLI says the same (labtest places ember at lab.GuestEmber in L1;
	// on a native host, use the ember on PATH if any).
	bin := lab.GuestEmber
	if !labtest.InLab() {
		var err error
		if bin, err = exec.LookPath("ember"); err != nil {
			t.Log("no ember binary on PATH; library check only")
			return
		}
	}
	out, err := exec.Command(bin, "check", "--json").Output()
	if err != nil {
		t.Fatalf("ember check --json: %v\n%s", err, out)
	}
	var rep Report
	if err := json.Unmarshal(out, &rep); err != nil || !rep.NativeKernels {
		t.Fatalf("ember check --json says native=%v (%v):\n%s", rep.NativeKernels, err, out)
	}
}

// TestNativeCPL0Guest runs a test guest in kernel mode, which only a KVM
// that runs guest kernels natively does at full speed, and checks its result.
func TestNativeCPL0Guest(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	const n = 4 << 20
	code, err := testguest.FillProgram(testguest.DataBase, n, 7, 11)
	if err != nil {
		t.Fatal(err)
	}
	img := testguest.NewImage(code, 16<<20)
	img.CPL0 = true
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := testguest.Run(ctx, sys, img, testguest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := testguest.ExpectedFillSum(n, 7, 11); len(res.Reports) != 1 || res.Reports[0] != want {
		t.Fatalf("CPL0 guest reported %v, want [%d]", res.Reports, want)
	}
	t.Logf("CPL0 guest filled %d MiB in %v", n>>20, res.Elapsed)
}
