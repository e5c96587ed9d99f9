package kvm

import (
	"errors"
	"strings"
	"testing"
)

func TestRequire(t *testing.T) {
	sys, err := Open()
	if err != nil {
		t.Fatalf("this test needs /dev/kvm: %v", err)
	}
	defer sys.Close()
	if err := sys.RequireAll(); err != nil {
		t.Fatalf("this host's KVM lacks a required capability: %v", err)
	}
	// A capability number no kernel defines: KVM answers 0.
	bogus := Cap(4000)
	err = sys.Require(CapIRQChip, bogus)
	var mc *MissingCapError
	if !errors.Is(err, ErrMissingCap) || !errors.As(err, &mc) || mc.Cap != bogus ||
		!strings.Contains(err.Error(), "KVM_CAP(4000)") {
		t.Fatalf("Require(bogus) = %v, want a MissingCapError naming it", err)
	}
	if got := CapImmediateExit.String(); got != "KVM_CAP_IMMEDIATE_EXIT" {
		t.Errorf("name %q", got)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := OpenPath("/nonexistent/kvm"); err == nil || !strings.Contains(err.Error(), "/nonexistent/kvm") {
		t.Errorf("OpenPath(missing) = %v", err)
	}
	if _, err := OpenPath("/dev/null"); err == nil {
		t.Error("OpenPath(/dev/null) succeeded")
	}
}
