package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embervm/ember/vmm/devices/bootmarker"
	"github.com/embervm/ember/vmm/kvm"
)

// syncBuffer is a console sink safe to read while the VM writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no kernel", Config{MemoryMiB: 128, VCPUs: 1}},
		{"no vcpus", Config{Kernel: "k", MemoryMiB: 128}},
		{"too many vcpus", Config{Kernel: "k", MemoryMiB: 128, VCPUs: 33}},
		{"too little memory", Config{Kernel: "k", MemoryMiB: 8, VCPUs: 1}},
		{"bad template", Config{Kernel: "k", MemoryMiB: 128, VCPUs: 1, CPUTemplate: "fancy"}},
	}
	for _, tt := range tests {
		if err := tt.cfg.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", tt.name, err)
		}
	}
}

// TestBadKernel: a file that is not a kernel is refused before any vCPU
// runs. It runs on the host (no guest code executes).
func TestBadKernel(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	ctx := context.Background()
	for _, k := range []string{"/etc/hostname", "/nonexistent"} {
		_, err := Build(ctx, sys, Config{Kernel: k, MemoryMiB: 64, VCPUs: 1}, nil)
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("kernel %s: %v, want an error naming it", k, err)
		}
	}
	if _, err := Build(ctx, sys, Config{Kernel: kernelPath, Initrd: "/nonexistent", MemoryMiB: 64, VCPUs: 1}, nil); err == nil {
		t.Error("missing initrd accepted")
	}
}

// TestNativeBootLinux boots the project's guest kernel with the placeholder
// init, which runs a command, prints its exit status and reboots; the
// reboot (i8042 reset) must end the VM cleanly.
func TestNativeBootLinux(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	for _, vcpus := range []int{1, 2} {
		t.Run(fmt.Sprintf("%dvcpu", vcpus), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var console syncBuffer
			vm, err := Build(ctx, sys, Config{
				Kernel: kernelPath, Initrd: initrdPath, MemoryMiB: 256, VCPUs: vcpus, Console: &console,
				Cmdline: "-- echo hello from the guest; nproc",
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer vm.Close()
			start := time.Now()
			if err := vm.Start(ctx); err != nil {
				t.Fatal(err)
			}
			res, err := vm.Wait(ctx)
			if err != nil {
				t.Fatalf("%v\nconsole:\n%s", err, console.String())
			}
			out := console.String()
			if res.Err != nil || res.Stop == nil || !strings.Contains(res.Stop.Reason, "reboot") {
				t.Fatalf("VM ended with %+v / %v, want a clean reboot stop\nconsole:\n%s", res.Stop, res.Err, out)
			}
			for _, want := range []string{"EMBER-PLACEHOLDER-INIT: up", "hello from the guest",
				fmt.Sprintf("\n%d\r", vcpus), "EMBER-PLACEHOLDER-INIT: exit 0"} {
				if !strings.Contains(out, want) {
					t.Errorf("console lacks %q", want)
				}
			}
			marks := vm.Marks()
			if len(marks) == 0 || marks[0].Code != bootmarker.MarkInit {
				t.Errorf("boot markers %+v, want the init marker", marks)
			} else {
				t.Logf("%d vCPU: /init reached %v after start; VM ended after %v",
					vcpus, marks[0].Elapsed.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			}
			if t.Failed() {
				t.Logf("console:\n%s", out)
			}
		})
	}
}
