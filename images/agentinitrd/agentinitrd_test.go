package agentinitrd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestWrite: the archive holds the agent as /init, executable, and /etc.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "ember-agent")
	body := []byte("\x7fELF not really an agent")
	if err := os.WriteFile(agent, body, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "agent.cpio")
	if err := Write(out, agent, false); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// newc headers: mode is the second field (after the 6-byte magic and
	// 8-digit inode); names follow the 110-byte header.
	found := map[string]string{}
	for off := 0; off+110 <= len(b); {
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic at %d", off)
		}
		field := func(i int) int {
			var v int
			for _, c := range h[6+8*i : 6+8*i+8] {
				v = v*16 + int(bytes.IndexByte([]byte("0123456789abcdef"), c|0x20))
			}
			return v
		}
		mode, size, nameLen := field(1), field(6), field(11)
		name := string(b[off+110 : off+110+nameLen-1])
		off = (off + 110 + nameLen + 3) &^ 3
		found[name] = string(b[off : off+size])
		if name == "init" && mode&0o111 == 0 {
			t.Errorf("/init mode %o, not executable", mode)
		}
		off = (off + size + 3) &^ 3
		if name == "TRAILER!!!" {
			break
		}
	}
	if found["init"] != string(body) {
		t.Errorf("/init holds %q", found["init"])
	}
	if _, ok := found["etc"]; !ok {
		t.Errorf("no /etc in %v", found)
	}
}
