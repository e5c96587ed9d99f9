package poolbench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// idleRSS returns the median resident memory of the `ember vmm` processes
// whose command line names runDir (the pool's ready VMMs when nothing is
// claimed) and the median of the part of it that is guest memory.
func idleRSS(runDir string) (total, guest uint64) {
	ents, _ := os.ReadDir("/proc")
	var totals, guests []uint64
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) < 2 || args[1] != "vmm" || !bytes.Contains(cmd, []byte(runDir)) {
			continue
		}
		t, g, err := smapsRSS(pid)
		if err != nil {
			continue
		}
		totals, guests = append(totals, t), append(guests, g)
	}
	if len(totals) == 0 {
		return 0, 0
	}
	slices.Sort(totals)
	slices.Sort(guests)
	return totals[len(totals)/2], guests[len(guests)/2]
}

// smapsRSS sums the Rss of every mapping of pid, and of those that hold
// guest memory: mappings registered with userfaultfd (VmFlags "um": the
// uffd and prefetch backends) or mapping a snapshot memory file (mmap).
// The copy backend's anonymous guest memory is not told apart.
func smapsRSS(pid int) (total, guest uint64, _ error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var rss uint64
	var isGuest bool
	flush := func() {
		total += rss
		if isGuest {
			guest += rss
		}
		rss, isGuest = 0, false
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch {
		case strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"): // a mapping's header
			flush()
			if len(fields) >= 6 && strings.Contains(fields[5], "/memory-") && strings.HasSuffix(fields[5], ".raw") {
				isGuest = true
			}
		case fields[0] == "Rss:" && len(fields) >= 2:
			kb, _ := strconv.ParseUint(fields[1], 10, 64)
			rss = kb << 10
		case fields[0] == "VmFlags:":
			if slices.Contains(fields[1:], "um") {
				isGuest = true
			}
		}
	}
	flush()
	return total, guest, sc.Err()
}
