package hostcheck

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/embervm/ember/internal/testguest"
	"github.com/embervm/ember/vmm/kvm"
)

func checkKVM(r *Report) (*kvm.System, bool) {
	sys, err := kvm.Open()
	if err != nil {
		r.add(Check{Name: "/dev/kvm", Status: No, Required: true, Detail: err.Error()})
		return nil, false
	}
	v, _ := sys.APIVersion()
	r.add(Check{Name: "/dev/kvm", Status: OK, Required: true,
		Detail: fmt.Sprintf("usable, KVM API version %d, backend %s", v, kvmBackend())})
	return sys, true
}

// kvmBackend names the loaded KVM vendor module.
func kvmBackend() string {
	var found []string
	for _, m := range []string{"kvm_intel", "kvm_amd", "kvm_pvm"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			found = append(found, m)
		}
	}
	if len(found) == 0 {
		return "unknown"
	}
	return strings.Join(found, "+")
}

// cpuVirtFlags returns the vmx/svm flags of /proc/cpuinfo.
func cpuVirtFlags() []string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if (f == "vmx" || f == "svm") && !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
		break
	}
	return out
}

func checkCaps(r *Report, sys *kvm.System) {
	var missing []string
	for _, c := range kvm.RequiredCaps {
		if v, err := sys.CheckExtension(c); err != nil || v == 0 {
			missing = append(missing, c.String())
		}
	}
	if len(missing) > 0 {
		r.add(Check{Name: "KVM capabilities", Status: No, Required: true,
			Detail: "missing " + strings.Join(missing, ", ")})
		return
	}
	r.add(Check{Name: "KVM capabilities", Status: OK, Required: true,
		Detail: fmt.Sprintf("all %d required present", len(kvm.RequiredCaps))})
}

// spinIterations makes the CPL0 loop take tens of milliseconds where KVM
// emulates kernel code (about 0.5 µs an instruction) and microseconds where
// it runs natively.
const spinIterations = 40_000

// timeSpin runs the spin guest at the given privilege level and returns how
// long it ran.
func timeSpin(ctx context.Context, sys *kvm.System, cpl0 bool) (time.Duration, error) {
	code, err := testguest.SpinProgram(spinIterations)
	if err != nil {
		return 0, err
	}
	img := testguest.NewImage(code, testguest.MinMemory)
	img.CPL0 = cpl0
	res, err := testguest.Run(ctx, sys, img, testguest.Options{})
	if err != nil {
		return 0, err
	}
	return res.Elapsed, nil
}

// NativeRatioLimit is how much slower the CPL0 loop may be than the CPL3
// loop for guest kernels to count as native. Hosts that emulate kernel code
// measure ~100x; native KVM ~1x; the nested lab (SVM under TCG) ~3x.
const NativeRatioLimit = 20

// checkNative times the same loop at CPL3 and CPL0.
func checkNative(ctx context.Context, r *Report, sys *kvm.System) bool {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	flags := strings.Join(cpuVirtFlags(), ",")
	if flags == "" {
		flags = "none"
	}
	best := func(cpl0 bool) (time.Duration, error) {
		var min time.Duration
		for i := 0; i < 2; i++ {
			d, err := timeSpin(ctx, sys, cpl0)
			if err != nil {
				return 0, err
			}
			if min == 0 || d < min {
				min = d
			}
		}
		return min, nil
	}
	user, err := best(false)
	if err != nil {
		r.add(Check{Name: "native guest kernels", Status: No, Detail: "CPL3 test guest failed: " + err.Error()})
		return false
	}
	kern, err := best(true)
	if err != nil {
		r.add(Check{Name: "native guest kernels", Status: No, Detail: "CPL0 test guest failed: " + err.Error()})
		return false
	}
	ratio := float64(kern) / float64(user)
	detail := fmt.Sprintf("CPL0 loop %v vs CPL3 loop %v (%.1fx); cpu flags %s, backend %s",
		kern.Round(time.Microsecond), user.Round(time.Microsecond), ratio, flags, kvmBackend())
	if ratio <= NativeRatioLimit {
		r.add(Check{Name: "native guest kernels", Status: OK, Detail: detail})
		return true
	}
	r.add(Check{Name: "native guest kernels", Status: No, Detail: detail +
		": KVM emulates guest kernel code, so Linux guests cannot boot here; run them in the nested lab (`ember lab run`)"})
	return false
}

func checkCreateLatency(r *Report, sys *kvm.System) {
	var ds []time.Duration
	for i := 0; i < 5; i++ {
		t0 := time.Now()
		vm, err := sys.CreateVM()
		if err != nil {
			r.add(Check{Name: "KVM_CREATE_VM latency", Status: No, Detail: err.Error()})
			return
		}
		ds = append(ds, time.Since(t0))
		vm.Close()
	}
	slices.Sort(ds)
	r.add(Check{Name: "KVM_CREATE_VM latency", Status: Info,
		Detail: fmt.Sprintf("median %v, max %v over %d", ds[len(ds)/2].Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond), len(ds))})
}
