package vmm

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/embervm/ember/vmm/kvm"
	"github.com/embervm/ember/vmm/memory"
)

type nopExits struct{}

func (nopExits) HandleIO(uint16, []byte, bool) error   { return nil }
func (nopExits) HandleMMIO(uint64, []byte, bool) error { return nil }

// TestUnknownExitReason feeds handleExit exit reasons KVM may add in the
// future (or that ember does not handle) through a real kvm_run area.
func TestUnknownExitReason(t *testing.T) {
	sys, err := kvm.Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	mem, err := memory.NewAnonymous(memory.Range{GPA: 0, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(sys, Config{VCPUs: 1, Memory: mem, NoIRQChip: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.VCPUs()[0]
	for _, reason := range []kvm.ExitReason{kvm.ExitUnknown, kvm.ExitHypercall, kvm.ExitDebug, 999} {
		c.fd.RunData().ExitReason = reason
		err := c.handleExit()
		var ee *ExitError
		if !errors.As(err, &ee) || !errors.Is(err, ErrUnhandledExit) || ee.Reason != reason ||
			!strings.Contains(err.Error(), reason.String()) {
			t.Errorf("exit %v: %v, want an ExitError naming it", reason, err)
		}
	}
	_ = slog.Default()
}
