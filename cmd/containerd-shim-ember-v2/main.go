// Command containerd-shim-ember-v2 is containerd's runtime shim for ember
// (runtime type io.containerd.ember.v2): each pod's containers run in one
// ember microVM. See docs/shim.md.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/embervm/ember/shim/manager"
	_ "github.com/embervm/ember/shim/plugin"
)

func main() {
	// The shim reaps its own children (VMM processes, logging binaries)
	// through os/exec; the framework's reaper would steal their statuses.
	shim.RunShim(context.Background(), manager.New(), func(c *shim.Config) {
		c.NoReaper = true
		c.NoSubreaper = true
	})
}
