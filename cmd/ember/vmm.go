package main

import (
	"context"

	"github.com/embervm/ember/internal/vmmcmd"
)

func init() {
	register(&command{
		name:    "vmm",
		summary: "run one VMM (a test guest, a Linux boot, or a restore of either kind of snapshot) behind the control API on a Unix socket",
		run: func(ctx context.Context, args []string) error {
			return vmmcmd.Run(ctx, newFlagSet("vmm", ""), args)
		},
	})
}
