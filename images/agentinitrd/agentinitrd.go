// Package agentinitrd builds the initramfs of an ember VM: the guest agent
// (cmd/ember-agent, a static binary) as /init and nothing else. The agent
// mounts the pseudo file systems itself and runs each container from a
// rootfs the host attaches as a drive, so the image needs no shell, no
// libraries and no device nodes (the kernel's built-in initramfs provides
// /dev/console).
package agentinitrd

import (
	"context"
	"fmt"
	"os"
	"os/exec"

	"github.com/embervm/ember/images/initramfs"
)

// Spec is the initramfs spec for the agent binary at agent (a host path).
func Spec(agent string) initramfs.Spec {
	return initramfs.Spec{
		Init: initramfs.File{Host: agent, Mode: 0o755},
		// /etc for resolv.conf (ConfigureNetwork); the agent makes the
		// mount points below /dev, /sys and /run itself.
		Dirs: []string{"/etc"},
	}
}

// Write writes the initramfs for the agent binary at agent to dst
// (atomically), gzip-compressed if compress is set.
func Write(dst, agent string, compress bool) error {
	return initramfs.WriteFile(dst, Spec(agent), compress)
}

// BuildAgent builds a static, stripped ember-agent from the module whose
// root is repo into dst.
func BuildAgent(ctx context.Context, repo, dst string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", dst, "./cmd/ember-agent")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("agentinitrd: go build ./cmd/ember-agent: %w\n%s", err, out)
	}
	return nil
}
