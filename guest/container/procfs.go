package container

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/embervm/ember/guest/cgroups"
)

// Without cgroup v2 (a host running the agent in tests), a container's
// processes are found by their pid namespace and measured from /proc.

// userHZ is the unit of /proc/<pid>/stat times (always 100 on Linux/x86).
const userHZ = 100

// pidNamespace returns the pid namespace of pid ("pid:[4026531836]").
func pidNamespace(pid int) (string, error) {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return "", fmt.Errorf("pid namespace of %d: %w", pid, err)
	}
	return ns, nil
}

// pidsInNamespace lists the live (not zombie) processes whose pid namespace
// is ns; zombies are left out as cgroup.procs leaves them out.
func pidsInNamespace(ns string) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "pid")); err != nil || got != ns {
			continue
		}
		if zombie(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// procStats sums CPU time and resident memory over pids.
func procStats(pids []int) cgroups.Stats {
	s := cgroups.Stats{Pids: uint64(len(pids))}
	page := uint64(os.Getpagesize())
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // exited meanwhile
		}
		utime, stime, rss, ok := parseStat(string(b))
		if !ok {
			continue
		}
		s.CPUUserNs += utime * 1e9 / userHZ
		s.CPUSystemNs += stime * 1e9 / userHZ
		s.MemoryUsage += rss * page
	}
	s.CPUUsageNs = s.CPUUserNs + s.CPUSystemNs
	return s
}

// parseStat extracts utime, stime (ticks) and rss (pages) from
// /proc/<pid>/stat; the command name may contain spaces and parentheses.
func parseStat(stat string) (utime, stime, rss uint64, ok bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, 0, false
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): utime is field 14, stime 15, rss 24.
	if len(f) < 22 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	utime, err1 = strconv.ParseUint(f[11], 10, 64)
	stime, err2 = strconv.ParseUint(f[12], 10, 64)
	rss, err3 = strconv.ParseUint(f[21], 10, 64)
	return utime, stime, rss, err1 == nil && err2 == nil && err3 == nil
}

// zombie reports whether pid has exited but was not reaped yet.
func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // gone
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}
