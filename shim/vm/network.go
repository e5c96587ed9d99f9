package vm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/log"

	"github.com/embervm/ember/shim/network"
)

// netTAP names the VM's TAP device in the pod's network namespace (one VM
// per pod, so one TAP per namespace).
const netTAP = "ember0"

// errNetworkNeedsBoot: pooled and restored VMs have no network interface,
// and virtio-mmio cannot add one to a running VM.
var errNetworkNeedsBoot = errors.New("the pod has a network interface, which only a cold-booted VM gets")

// connectNetwork redirects the pod's CNI interface to the VM's TAP, which
// the VMM created in the pod's namespace; nil pod: no network.
func (v *VM) connectNetwork(pod *network.Pod) error {
	if pod == nil {
		return nil
	}
	t := time.Now()
	if err := network.Connect(pod, netTAP); err != nil {
		return fmt.Errorf("vm: %w", err)
	}
	v.net = pod
	v.Steps = append(v.Steps, Step{Name: "network.connect", Duration: time.Since(t)})
	return nil
}

// configureGuestNetwork gives the guest's interface the CNI interface's
// addresses and routes.
func (v *VM) configureGuestNetwork(ctx context.Context) error {
	if v.net == nil {
		return nil
	}
	t := time.Now()
	actx, cancel := context.WithTimeout(ctx, time.Duration(v.cfg.AgentTimeout))
	defer cancel()
	if _, err := v.agent.ConfigureNetwork(actx, v.net.Request()); err != nil {
		return fmt.Errorf("vm: agent configure network (%s in %s): %w", v.net.Link, v.net.NetNS, err)
	}
	v.Steps = append(v.Steps, Step{Name: "network.guest", Duration: time.Since(t)})
	return nil
}

// disconnectNetwork removes the redirect from the CNI interface (the TAP's
// went with the VMM).
func (v *VM) disconnectNetwork(ctx context.Context) {
	if v.net == nil {
		return
	}
	if err := network.Disconnect(v.net); err != nil {
		log.G(ctx).WithError(err).Warn("vm: network")
	}
}
