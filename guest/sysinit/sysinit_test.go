package sysinit

import (
	"bytes"
	"strings"
	"testing"
)

func TestBootMountsOrder(t *testing.T) {
	// A mount nested in another boot mount (/dev/pts in /dev) must come
	// after it, or it would be hidden.
	for i, m := range BootMounts {
		for _, later := range BootMounts[i+1:] {
			if strings.HasPrefix(m.Target, later.Target+"/") {
				t.Errorf("%s is mounted before its parent %s", m.Target, later.Target)
			}
		}
	}
	if IsPID1() {
		t.Fatal("tests do not run as PID 1")
	}
}

func TestReadyMarker(t *testing.T) {
	var b bytes.Buffer
	PrintReady(&b, "vsock://1024")
	if got := b.String(); got != "ember-agent ready vsock://1024\n" {
		t.Errorf("got %q", got)
	}
}
