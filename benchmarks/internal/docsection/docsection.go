// Package docsection replaces one "## " section of a markdown file, so that
// each benchmark keeps its own results table in docs/benchmarks.md.
package docsection

import (
	"os"
	"strings"
)

// Update replaces (or appends) the section of the markdown file at path
// that starts with the line heading (e.g. "## Snapshot restore") with body,
// leaving every other section alone. The file is replaced atomically.
func Update(path, heading, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	if text == "" {
		text = "# Benchmarks\n"
	}
	section := heading + "\n\n" + strings.TrimSpace(body) + "\n"
	// The heading as a whole line: "### Pool" must not match "## Pool".
	start := -1
	if strings.HasPrefix(text, heading+"\n") {
		start = 0
	} else if i := strings.Index(text, "\n"+heading+"\n"); i >= 0 {
		start = i + 1
	}
	if start < 0 {
		text = strings.TrimRight(text, "\n") + "\n\n" + section
	} else {
		rest := text[start+len(heading)+1:]
		end := len(text)
		if i := strings.Index(rest, "\n## "); i >= 0 {
			end = start + len(heading) + 1 + i + 1
			section += "\n"
		}
		text = text[:start] + section + text[end:]
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
