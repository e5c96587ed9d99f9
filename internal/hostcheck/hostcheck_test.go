package hostcheck

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	r := Run(context.Background())
	if !r.Usable {
		var b bytes.Buffer
		r.WriteText(&b)
		t.Fatalf("host with /dev/kvm reported unusable:\n%s", b.String())
	}
	if r.Elapsed > time.Second {
		t.Errorf("check took %v, want under a second", r.Elapsed)
	}
	want := []string{"/dev/kvm", "KVM capabilities", "native guest kernels", "KVM_CREATE_VM latency",
		"userfaultfd", "/dev/net/tun", "vhost-vsock", "cgroup v2"}
	for _, name := range want {
		found := false
		for _, c := range r.Checks {
			if c.Name == name {
				found = true
				if c.Detail == "" {
					t.Errorf("%s: empty detail", name)
				}
			}
		}
		if !found {
			t.Errorf("no %q check", name)
		}
	}
	// The native verdict must agree with the CPU: where /proc/cpuinfo has
	// neither vmx nor svm, guest kernels cannot run natively.
	if len(cpuVirtFlags()) == 0 && r.NativeKernels {
		t.Errorf("no vmx/svm in /proc/cpuinfo, yet guest kernels reported native")
	}
	var text bytes.Buffer
	r.WriteText(&text)
	if !r.NativeKernels && !strings.Contains(text.String(), "nested lab") {
		t.Errorf("non-native host report does not name the nested lab:\n%s", text.String())
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.NativeKernels != r.NativeKernels || len(back.Checks) != len(r.Checks) {
		t.Errorf("JSON round trip: %v %+v", err, back)
	}
	t.Logf("\n%s", text.String())
}
