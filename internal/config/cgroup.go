package config

import "fmt"

// Cgroup is an interface's cgroup v2 limits, applied when taskd runs with a delegated
// cgroup (systemd's Delegate=yes; see docs/security.md). The zero value of each means no
// limit. memory_max and pids_max bound each worker (its own cgroup: the worker and every
// process it starts); cpu_weight is the interface's share of the CPU against the other
// interfaces (set on the interface's cgroup, the parent of its workers'). All reload live:
// the kernel takes new limits for running cgroups.
type Cgroup struct {
	MemoryMax ByteSize `yaml:"memory_max"` // memory.max of each worker; 0 = none
	PidsMax   int      `yaml:"pids_max"`   // pids.max of each worker: processes and threads; 0 = none
	CPUWeight int      `yaml:"cpu_weight"` // cpu.weight of the interface, 1..10000; 0 = the kernel's default (100)
}

// Limits of cpu_weight (the kernel's range of cpu.weight).
const (
	MinCPUWeight = 1
	MaxCPUWeight = 10000
	// MinCgroupMemory is the smallest memory_max accepted: less cannot start a process.
	MinCgroupMemory = 1 * MiB
)

// IsSet reports whether any limit is set.
func (c Cgroup) IsSet() bool { return c != Cgroup{} }

// validate checks the cgroup keys of an interface; prefix is its key path
// ("interfaces.NAME").
func (c Cgroup) validate(prefix string) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &problem{key: prefix + ".cgroup." + key, msg: fmt.Sprintf(format, args...)})
	}
	if c.MemoryMax < 0 || (c.MemoryMax > 0 && c.MemoryMax < MinCgroupMemory) {
		bad("memory_max", "must be 0 (no limit) or at least %s (got %s)", MinCgroupMemory, c.MemoryMax)
	}
	if c.PidsMax < 0 {
		bad("pids_max", "must be ≥ 0 (got %d); 0 means no limit", c.PidsMax)
	}
	if c.CPUWeight != 0 && (c.CPUWeight < MinCPUWeight || c.CPUWeight > MaxCPUWeight) {
		bad("cpu_weight", "must be from %d to %d (the kernel's cpu.weight; 100 is every cgroup's default), or 0 for the default (got %d)",
			MinCPUWeight, MaxCPUWeight, c.CPUWeight)
	}
	return errs
}
