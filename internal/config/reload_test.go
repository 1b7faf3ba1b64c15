package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestChangedKeys(t *testing.T) {
	a, err := parse([]byte(`
listen: ["unix:/tmp/a.sock"]
log: {level: info}
interfaces:
  x: {command: [w], env: {A: "1"}, max_workers: 2}
`), nil)
	require.NoError(t, err)
	b := *a
	b.Log.Level = "debug"
	b.Listen = []string{"unix:/tmp/b.sock"}
	b.ShutdownGrace = time.Minute
	assert.Equal(t, []string{"listen", "shutdown_grace", "log.level"}, ChangedDaemonKeys(*a, b))
	assert.Empty(t, ChangedDaemonKeys(*a, *a))

	x := a.Interfaces["x"]
	y := x
	y.Env = map[string]string{"A": "2"}
	y.MaxWorkers = 3
	n := 0
	y.MinIdle = &n
	assert.Equal(t, []string{"env", "min_idle", "max_workers"}, ChangedInterfaceKeys(x, y))
	assert.Empty(t, ChangedInterfaceKeys(x, x))
	e1, e2 := x, x
	e1.Env, e2.Env = nil, map[string]string{}
	assert.Empty(t, ChangedInterfaceKeys(e1, e2), "no env and env: {} are the same")

	assert.Equal(t, ReloadNewGeneration, InterfaceKeyReload("env"))
	assert.Equal(t, ReloadLive, InterfaceKeyReload("max_workers"))
	assert.Equal(t, ReloadRestart, DaemonKeyReload("listen"))
	assert.Equal(t, ReloadLive, DaemonKeyReload("log.level"))
	assert.Equal(t, ReloadRestart, DaemonKeyReload("log.format"))
}
