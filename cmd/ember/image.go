package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/embervm/ember/images/diskimage"
	"github.com/embervm/ember/images/initramfs"
)

func init() {
	register(&command{
		name:    "image",
		summary: "build guest images: initrd (an /init plus optional busybox), rootfs (ext4 from a directory)",
		run:     runImage,
	})
}

// busyboxApplets are linked into /bin of an initrd built --busybox.
var busyboxApplets = []string{"sh", "echo", "cat", "ls", "mount", "sleep", "sync", "uname", "date", "dmesg",
	"ip", "ping", "grep", "head", "wc", "dd", "md5sum", "sha256sum", "nproc", "free", "poweroff", "reboot", "true", "false"}

func runImage(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: ember image initrd|rootfs [flags]")
	}
	switch args[0] {
	case "initrd":
		fs := newFlagSet("image initrd", "")
		init := fs.String("init", "", "static binary to run as /init (e.g. bin/ember-agent, or a placeholder init) (required)")
		busybox := fs.String("busybox", "", "add this static busybox as /bin/busybox with /bin/sh and other applets")
		out := fs.String("out", "", "initramfs to write (gzip cpio) (required)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *init == "" || *out == "" {
			return errors.New("--init and --out are required")
		}
		spec := initramfs.Spec{Init: initramfs.File{Host: *init, Mode: 0o755}, Dirs: []string{"/etc", "/tmp"}}
		if *busybox != "" {
			spec.Files = append(spec.Files, initramfs.File{Guest: "/bin/busybox", Host: *busybox, Mode: 0o755})
			for _, a := range busyboxApplets {
				spec.Symlinks = append(spec.Symlinks, initramfs.Symlink{Guest: "/bin/" + a, Target: "busybox"})
			}
		}
		if err := initramfs.WriteFile(*out, spec, true); err != nil {
			return err
		}
		fmt.Println(*out)
		return nil
	case "rootfs":
		fs := newFlagSet("image rootfs", "")
		dir := fs.String("dir", "", "directory to turn into an ext4 image (required)")
		out := fs.String("out", "", "image to write (required)")
		label := fs.String("label", "rootfs", "file system label")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" || *out == "" {
			return errors.New("--dir and --out are required")
		}
		if err := diskimage.Create(ctx, *dir, *out, diskimage.Options{Label: *label}); err != nil {
			return err
		}
		fi, err := os.Stat(*out)
		if err != nil {
			return err
		}
		fmt.Printf("%s (%d MiB)\n", *out, fi.Size()>>20)
		return nil
	}
	return fmt.Errorf("unknown image command %q (have initrd, rootfs)", args[0])
}
