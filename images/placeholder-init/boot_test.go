package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embervm/ember/images/initramfs"
)

// TestBootUnderQEMU boots the cached guest kernel (images/kernel/build.sh)
// with an initramfs holding this program under QEMU TCG, the only way to
// run a guest kernel to userspace on the development hosts without the
// nested lab, and checks that it comes up, runs the command line's command
// and restarts the machine.
func TestBootUnderQEMU(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a kernel under QEMU TCG (seconds)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	out, err := exec.Command("../kernel/build.sh", "--hash").Output()
	if err != nil {
		t.Skipf("images/kernel/build.sh --hash: %v", err)
	}
	kernel := filepath.Join(strings.TrimSpace(string(out)), "bzImage")
	if _, err := os.Stat(kernel); err != nil {
		t.Skipf("guest kernel not built (run images/kernel/build.sh): %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "init")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	initrd := filepath.Join(dir, "initrd.cpio.gz")
	if err := initramfs.WriteFile(initrd, initramfs.Spec{Init: initramfs.File{Host: bin}}, true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, qemu, "-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off",
		"-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config",
		"-nographic", "-no-reboot", "-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 reboot=t panic=-1 quiet -- /init-missing-binary")
	console, err := cmd.CombinedOutput()
	t.Logf("QEMU ran %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, console)
	}
	for _, want := range []string{Marker + " up", Marker + " run", Marker + " exit -1"} {
		if !strings.Contains(string(console), want) {
			t.Errorf("console lacks %q:\n%s", want, console)
		}
	}
}
