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

// vmmMemory is what an idle VMM process holds resident.
type vmmMemory struct {
	// RSS is its resident set (VmRSS), Guest the part of it that is guest
	// memory.
	RSS, Guest uint64
	// Private is the part of RSS beyond guest memory that no other process
	// shares (Private_Clean + Private_Dirty): what one more pooled VMM
	// costs, the ember binary's pages being shared by all of them.
	Private uint64
}

// idleRSS returns the medians of the memory of the `ember vmm` processes
// whose command line names runDir (the pool's ready VMMs when nothing is
// claimed).
func idleRSS(runDir string) vmmMemory {
	ents, _ := os.ReadDir("/proc")
	var totals, guests, privs []uint64
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
		m, err := smapsRSS(pid)
		if err != nil {
			continue
		}
		totals, guests, privs = append(totals, m.RSS), append(guests, m.Guest), append(privs, m.Private)
	}
	if len(totals) == 0 {
		return vmmMemory{}
	}
	med := func(v []uint64) uint64 { slices.Sort(v); return v[len(v)/2] }
	return vmmMemory{RSS: med(totals), Guest: med(guests), Private: med(privs)}
}

// smapsRSS sums the Rss of every mapping of pid, and of those that hold
// guest memory: mappings registered with userfaultfd (VmFlags "um": the
// uffd and prefetch backends) or mapping a snapshot memory file (mmap).
// The copy backend's anonymous guest memory is not told apart.
func smapsRSS(pid int) (m vmmMemory, _ error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	var rss, priv uint64
	var isGuest bool
	flush := func() {
		m.RSS += rss
		if isGuest {
			m.Guest += rss
		} else {
			m.Private += priv
		}
		rss, priv, isGuest = 0, 0, false
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
		case (fields[0] == "Private_Clean:" || fields[0] == "Private_Dirty:") && len(fields) >= 2:
			kb, _ := strconv.ParseUint(fields[1], 10, 64)
			priv += kb << 10
		case fields[0] == "VmFlags:":
			if slices.Contains(fields[1:], "um") {
				isGuest = true
			}
		}
	}
	flush()
	return m, sc.Err()
}
