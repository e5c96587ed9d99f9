package cgroups

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ErrUnsupportedResource means a resource setting has no cgroup2 mapping
// here.
var ErrUnsupportedResource = errors.New("unsupported resource setting")

// Update writes the OCI linux.resources that have a cgroup2 file: memory
// limit, CPU quota/period and shares (as cpu.weight), pids limit, cpuset.
func (g *Group) Update(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	for _, w := range writes(r) {
		if err := writeFile(filepath.Join(g.dir, w.file), w.value); err != nil {
			return fmt.Errorf("update resources: %w", err)
		}
	}
	return nil
}

type fileWrite struct{ file, value string }

// writes maps OCI resources to cgroup2 files, in a stable order.
func writes(r *specs.LinuxResources) []fileWrite {
	var out []fileWrite
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			out = append(out, fileWrite{"memory.max", limit(*m.Limit)})
		}
		if m.Reservation != nil {
			out = append(out, fileWrite{"memory.low", limit(*m.Reservation)})
		}
	}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares > 0 {
			out = append(out, fileWrite{"cpu.weight", strconv.FormatUint(SharesToWeight(*c.Shares), 10)})
		}
		if c.Quota != nil || c.Period != nil {
			quota := "max"
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			}
			period := uint64(100000)
			if c.Period != nil && *c.Period > 0 {
				period = *c.Period
			}
			out = append(out, fileWrite{"cpu.max", quota + " " + strconv.FormatUint(period, 10)})
		}
		if c.Cpus != "" {
			out = append(out, fileWrite{"cpuset.cpus", c.Cpus})
		}
		if c.Mems != "" {
			out = append(out, fileWrite{"cpuset.mems", c.Mems})
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil {
		out = append(out, fileWrite{"pids.max", limit(*p.Limit)})
	}
	return out
}

func limit(v int64) string {
	if v <= 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// SharesToWeight converts cgroup v1 cpu.shares [2, 262144] to cgroup v2
// cpu.weight [1, 10000] (the conversion runc and crun use).
func SharesToWeight(shares uint64) uint64 {
	if shares < 2 {
		shares = 2
	}
	if shares > 262144 {
		shares = 262144
	}
	return 1 + ((shares-2)*9999)/262142
}
