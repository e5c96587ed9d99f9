package pool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// ErrConfig reports an invalid pool configuration.
var ErrConfig = errors.New("pool: invalid configuration")

// Profile is one kind of VM the pool keeps ready.
type Profile struct {
	// Name identifies the profile in claims.
	Name string `json:"name"`
	// Size is how many ready VMs to keep.
	Size int `json:"size"`
	// MemoryMiB is each VM's guest memory, charged against the budget.
	MemoryMiB uint64 `json:"memory_mib"`
	// VMMArgs are the `ember vmm` arguments that make the VM, for example
	// ["--restore", DIR, "--backend", "prefetch"] or ["--testguest", "count"].
	VMMArgs []string `json:"vmm_args"`
	// IdleTimeout reaps ready VMs nobody claimed for this long (0: never).
	// Reaped VMs are not replaced until the next claim of the profile.
	IdleTimeout Duration `json:"idle_timeout"`
	// Console keeps each VM's guest console in RUN_DIR/ID.console (ember
	// vmm --console; Linux VMs only), named in the claim.
	Console bool `json:"console"`
	// IsolateNetwork starts each VMM in its own, empty network namespace
	// (needs CAP_SYS_ADMIN), as the containerd shim does with the VMMs it
	// starts: containerd reports a VMM's pid as its containers' pid.
	IsolateNetwork bool `json:"isolate_network"`
}

// poolFlags are the ember vmm flags the pool sets itself: per VMM paths
// and the fds of its protocol with the VMM.
var poolFlags = []string{"api-sock", "id", "ready-fd", "lease-fd", "claim-fd", "idle-trim", "vsock-uds", "console"}

// Config configures a Manager.
type Config struct {
	// Ember is the ember binary that runs `ember vmm` (default: this
	// executable).
	Ember string `json:"ember"`
	// RunDir holds the pooled VMMs' API sockets.
	RunDir string `json:"run_dir"`
	// ReadyDir, if set, lists the ready VMMs for direct claims (ready.go):
	// a Client claims there without the daemon in its path. `ember pool
	// serve` sets it to ReadyDir(SOCKET), where Clients of SOCKET look (it
	// is not read from a configuration file).
	ReadyDir string `json:"-"`
	// MaxVMs bounds ready plus starting VMs over all profiles (0: the sum
	// of the profiles' sizes).
	MaxVMs int `json:"max_vms"`
	// MemoryBudgetMiB bounds the guest memory of ready plus starting VMs
	// (0: unbounded).
	MemoryBudgetMiB uint64 `json:"memory_budget_mib"`
	// StartTimeout bounds one VMM's start (default 30 s).
	StartTimeout Duration `json:"start_timeout"`
	// RefillDelay is how long the pool waits after a claim before starting
	// a replacement, so that the replacement's start (a process, a restore)
	// does not compete for CPU with the VM just handed over (default
	// 100 ms; negative: refill at once).
	RefillDelay Duration  `json:"refill_delay"`
	Profiles    []Profile `json:"profiles"`
}

// Duration is a time.Duration that reads "10m" in JSON.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadConfig reads a JSON configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if len(c.Profiles) == 0 {
		return fmt.Errorf("%w: no profiles", ErrConfig)
	}
	if c.RunDir == "" {
		return fmt.Errorf("%w: no run_dir", ErrConfig)
	}
	seen := map[string]bool{}
	for _, p := range c.Profiles {
		switch {
		case p.Name == "":
			return fmt.Errorf("%w: profile without a name", ErrConfig)
		case seen[p.Name]:
			return fmt.Errorf("%w: profile %q twice", ErrConfig, p.Name)
		case p.Size < 0:
			return fmt.Errorf("%w: profile %q: negative size", ErrConfig, p.Name)
		case len(p.VMMArgs) == 0:
			return fmt.Errorf("%w: profile %q: no vmm_args", ErrConfig, p.Name)
		}
		for _, a := range p.VMMArgs {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if strings.HasPrefix(a, "-") && slices.Contains(poolFlags, name) {
				return fmt.Errorf("%w: profile %q: vmm_args must not set %s: the pool sets it per VMM (see \"console\" for the console)", ErrConfig, p.Name, a)
			}
		}
		seen[p.Name] = true
	}
	return nil
}
