package vmm

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/embervm/ember/vmm/kvm"
)

// ErrPrimeRan: priming a vCPU ran guest code, which it must never do.
var ErrPrimeRan = errors.New("vmm: priming the vCPU entered the guest")

// Prime makes every vCPU's first entry ahead of time (VCPU.Prime). The
// machine must not be running.
func (m *Machine) Prime(ctx context.Context) error {
	for _, c := range m.vcpus {
		if err := c.Prime(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Prime enters KVM_RUN once with a signal pending, so that KVM does the
// work of the vCPU's first entry ahead of time and returns before the
// guest runs a single instruction: it processes the requests that setting
// the vCPU's state queued and loads the vCPU's MMU, then sees the signal
// just before the switch to the guest and returns EINTR. A restored vCPU
// waiting in the warm pool is primed, so that its claim does not pay for
// that (about 0.1 ms of the first run on the development hosts, whose KVM
// shadows the guest's page tables).
//
// The signal is the kick signal, blocked on the vCPU thread and unblocked
// only inside KVM_RUN (KVM_SET_SIGNAL_MASK), then consumed. The vCPU must
// not be running.
func (c *VCPU) Prime(ctx context.Context) error {
	return c.Do(ctx, func(fd *kvm.VCPU) error {
		if err := primeEntry(fd); err != nil {
			return fmt.Errorf("vCPU %d: %w", c.id, err)
		}
		return nil
	})
}

// primeEntry runs on the vCPU thread.
func primeEntry(fd *kvm.VCPU) error {
	bit := uint64(1) << (uint(kickSignal) - 1)
	var block, old unix.Sigset_t
	block.Val[0] = bit
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &block, &old); err != nil {
		return fmt.Errorf("prime: block the kick signal: %w", err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	inRun := old.Val[0] &^ bit
	if err := fd.SetSignalMask(&inRun); err != nil {
		return fmt.Errorf("prime: %w", err)
	}
	defer fd.SetSignalMask(nil)
	if err := unix.Tgkill(pid, unix.Gettid(), kickSignal); err != nil {
		return fmt.Errorf("prime: signal the vCPU thread: %w", err)
	}
	defer takePending(&block)
	err := fd.Run()
	switch {
	case kvm.IsInterrupted(err):
		return nil
	case err != nil:
		return fmt.Errorf("prime: %w", err)
	}
	return fmt.Errorf("%w (exit %v)", ErrPrimeRan, fd.RunData().ExitReason)
}
