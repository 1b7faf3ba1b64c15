package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCgroupKeys(t *testing.T) {
	cfg, err := parse([]byte(`
interfaces:
  img:
    command: [w]
    cgroup: {memory_max: 512MiB, pids_max: 64, cpu_weight: 200}
  zero:
    command: [w]
    cgroup: {memory_max: 0, pids_max: 0, cpu_weight: 0}
  none:
    command: [w]
`), []string{"TASKD_INTERFACES_NONE_CGROUP_PIDS_MAX=10"})
	require.NoError(t, err)
	assert.Equal(t, Cgroup{MemoryMax: 512 * MiB, PidsMax: 64, CPUWeight: 200}, cfg.Interfaces["img"].Cgroup)
	assert.False(t, cfg.Interfaces["zero"].Cgroup.IsSet(), "0 is no limit, not an error")
	assert.Equal(t, Cgroup{PidsMax: 10}, cfg.Interfaces["none"].Cgroup, "from the environment")

	_, err = parse([]byte(`
interfaces:
  img:
    command: [w]
    cgroup:
      memory_max: 1000
      pids_max: -1
      cpu_weight: 10001
  neg:
    command: [w]
    cgroup: {memory_max: -1, cpu_weight: -5, pid_max: 3}
`), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unknown key interfaces.neg.cgroup.pid_max (did you mean pids_max?)")
	_, err = parse([]byte(`
interfaces:
  img:
    command: [w]
    cgroup:
      memory_max: 1000
      pids_max: -1
      cpu_weight: 10001
`), nil)
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	assert.Equal(t, []string{
		"line 6: interfaces.img.cgroup.memory_max: must be 0 (no limit) or at least 1MiB (got 1000B)",
		"line 7: interfaces.img.cgroup.pids_max: must be ≥ 0 (got -1); 0 means no limit",
		"line 8: interfaces.img.cgroup.cpu_weight: must be from 1 to 10000 (the kernel's cpu.weight; 100 is every cgroup's default), or 0 for the default (got 10001)",
	}, lines)

	assert.Equal(t, ReloadLive, InterfaceKeyReload("cgroup.memory_max"), "limits are written to running cgroups")
	a, b := cfg.Interfaces["img"], cfg.Interfaces["img"]
	b.Cgroup.CPUWeight = 100
	assert.Equal(t, []string{"cgroup.cpu_weight"}, ChangedInterfaceKeys(a, b))
}
