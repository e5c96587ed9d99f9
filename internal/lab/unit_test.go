package lab

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestModuleName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"kvm-amd", "kvm_amd"},
		{"kvm_amd.ko", "kvm_amd"},
		{"kernel/arch/x86/kvm/kvm-amd.ko", "kvm_amd"},
		{"virtio_mmio", "virtio_mmio"},
	}
	for _, tc := range tests {
		if got := moduleName(tc.in); got != tc.want {
			t.Errorf("moduleName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGuestEnv(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"defaults", nil, []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root", "TERM=dumb", "EMBER_LAB_GUEST=1"}},
		{"override and add", []string{"PATH=/x", "A=1"}, []string{"PATH=/x", "HOME=/root", "TERM=dumb", "EMBER_LAB_GUEST=1", "A=1"}},
		{"last wins", []string{"A=1", "A=2"}, []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root", "TERM=dumb", "EMBER_LAB_GUEST=1", "A=2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := guestEnv(tc.in); !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestKernelCmdline(t *testing.T) {
	c := kernelCmdline([]string{"loglevel=7"})
	for _, want := range []string{"console=ttyS0", "reboot=t", "panic=-1", "rdinit=" + GuestEmber} {
		if !strings.Contains(c, want) {
			t.Errorf("cmdline %q lacks %q", c, want)
		}
	}
	if !strings.HasSuffix(c, " loglevel=7 -- lab guest-init") {
		t.Errorf("cmdline %q: extra args must precede the init arguments", c)
	}
}

func TestTail(t *testing.T) {
	tl := newTail(16)
	tl.Write([]byte("line one\r\nline two\nline three\n"))
	if got := tl.String(); got != "line three\n" {
		t.Fatalf("tail = %q", got)
	}
	short := newTail(100)
	short.Write([]byte("a\nb"))
	if got := short.String(); got != "a\nb" {
		t.Fatalf("tail = %q", got)
	}
}

// TestResolveModules checks dependency order against the real L1 kernel
// (downloaded into the cache on first use).
func TestResolveModules(t *testing.T) {
	dir, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := PrepareKernel(context.Background(), dir, DefaultKernelPackage)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := resolveModules(k, []string{"kvm-amd", "virtio_console", "no_such_optional"}, map[string]bool{"no_such_optional": true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	pos := func(n string) int { return slices.Index(names, n) }
	for _, dep := range [][2]string{{"irqbypass", "kvm"}, {"kvm", "kvm_amd"}, {"virtio_ring", "virtio_console"}} {
		if pos(dep[0]) < 0 || pos(dep[1]) < 0 || pos(dep[0]) > pos(dep[1]) {
			t.Errorf("%s must load before %s: order %v", dep[0], dep[1], names)
		}
	}
	if _, err := resolveModules(k, []string{"no_such_module"}, nil); err == nil {
		t.Error("a missing required module resolved")
	}
	// ext4 is built into the cloud kernel: nothing to load, no error.
	if mods, err := resolveModules(k, []string{"ext4"}, nil); err != nil || len(mods) != 0 {
		t.Errorf("built-in ext4: %v, %v", mods, err)
	}
}

func TestSharedLibrariesOfNonELF(t *testing.T) {
	dir := t.TempDir()
	tests := map[string]string{"short": "x\n", "script": "#!/bin/sh\necho hi\n", "empty": ""}
	for name, content := range tests {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		if libs, err := SharedLibraries(p); err != nil || libs != nil {
			t.Errorf("%s: %v, %v; want nothing", name, libs, err)
		}
	}
	if _, err := SharedLibraries(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestAnnotateRIP marks the RIPs in L1's kernel text with their offset.
func TestAnnotateRIP(t *testing.T) {
	regs := "RIP=ffffffff8d417a0b RFL=00000246 CPL=0 HLT=1\nRIP=0000000000401000 CPL=3"
	tests := []struct {
		name string
		text uint64
		want string
	}{
		{"kernel", 0xffffffff8d400000, "RIP=ffffffff8d417a0b (_text+0x17a0b) RFL=00000246 CPL=0 HLT=1\nRIP=0000000000401000 CPL=3"},
		{"no text reported", 0, regs},
		{"beyond the kernel", 0xffffffff80000000, regs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := annotateRIP(regs, tc.text); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestCleanMonitor keeps the register lines of an "info registers" answer.
func TestCleanMonitor(t *testing.T) {
	in := "QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) info registers\r\n" +
		"CPU#0\r\nRAX=0000000000000001 RBX=0\r\nRIP=ffffffff81017a0b RFL=00000246 HLT=1\r\n" +
		"ES =0000 0000000000000000\r\nCS =0010 0000000000000000\r\nCR0=80050033 CR3=0\r\n" +
		"EFER=0000000000000d01\r\nYMM00=0 0 0 0\r\n(qemu) "
	want := "CPU#0\nRAX=0000000000000001 RBX=0\nRIP=ffffffff81017a0b RFL=00000246 HLT=1\nCS =0010 0000000000000000\nCR0=80050033 CR3=0\nEFER=0000000000000d01"
	if got := cleanMonitor(in); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}
