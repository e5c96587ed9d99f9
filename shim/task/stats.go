package task

import (
	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/embervm/ember/guest/api"
)

// metrics converts the agent's figures to the cgroup v2 metrics containerd
// clients decode (ctr task metrics, the CRI's stats).
func metrics(st *api.StatsResponse) *stats.Metrics {
	return &stats.Metrics{
		CPU: &stats.CPUStat{
			UsageUsec:  st.CpuUsageNs / 1000,
			UserUsec:   st.CpuUserNs / 1000,
			SystemUsec: st.CpuSystemNs / 1000,
		},
		Memory: &stats.MemoryStat{Usage: st.MemoryUsageBytes, UsageLimit: st.MemoryLimitBytes},
		Pids:   &stats.PidsStat{Current: st.PidsCurrent},
	}
}
