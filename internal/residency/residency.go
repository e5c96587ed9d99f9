// Package residency trims what an idle process keeps mapped.
package residency

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrResidency reports a trim that could not be made.
var ErrResidency = errors.New("residency")

// DropExecutablePages removes from this process's page tables the pages
// of its executable's read-only segments (code, read-only data, the Go
// runtime's tables). They stay in the page cache, shared with every other
// process that runs the binary; the next access maps a page again (a minor
// fault, which also maps its neighbours already in the page cache). What
// the process touched only while it started (flag parsing, snapshot
// decoding, the restore) then no longer counts in its resident set.
// Writable segments are left alone: they hold the process's own copies.
// It returns how many bytes of mappings it dropped.
func DropExecutablePages() (uint64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrResidency, err)
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrResidency, err)
	}
	var dropped uint64
	for _, m := range readOnlyMappings(maps, exe) {
		// MADV_DONTNEED on a private file mapping that was never written
		// only unmaps: the file's pages are what the next access maps.
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(m.start), uintptr(m.end-m.start), unix.MADV_DONTNEED); e != 0 {
			return dropped, fmt.Errorf("%w: madvise %#x-%#x: %w", ErrResidency, m.start, m.end, e)
		}
		dropped += m.end - m.start
	}
	return dropped, nil
}

type mapping struct{ start, end uint64 }

// readOnlyMappings returns the private read-only mappings of path in a
// /proc/PID/maps listing.
func readOnlyMappings(maps []byte, path string) []mapping {
	var out []mapping
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path (the path may hold spaces)
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Join(f[5:], " ") != path {
			continue
		}
		if perms := f[1]; len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		out = append(out, mapping{start, end})
	}
	return out
}
