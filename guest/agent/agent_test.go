package agent

import (
	"testing"
)

func TestExitStatus(t *testing.T) {
	h := newHarness(t)
	tests := []struct {
		name   string
		script string
		code   uint32
	}{
		{"true", "true", 0},
		{"exit 3", "exit 3", 3},
		{"exit 255", "exit 255", 255},
		{"false", "false", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, st := h.run("exit", testSpec("sh", "-c", tc.script))
			if st.ExitStatus != tc.code || st.Signal != 0 {
				t.Errorf("status = %d signal %d, want %d", st.ExitStatus, st.Signal, tc.code)
			}
		})
	}
}
