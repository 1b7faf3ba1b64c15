package server_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/server"
	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// watchdogPings counts the WATCHDOG=1 notifications taskd has sent.
func watchdogPings(d *taskdtest.Daemon) int {
	n := 0
	for _, s := range d.Notifications() {
		if s == "WATCHDOG=1" {
			n++
		}
	}
	return n
}

// TestSystemdWatchdog: with WATCHDOG_USEC set (as systemd's WatchdogSec= sets it), taskd
// sends WATCHDOG=1 again and again, every WATCHDOG_USEC/2, also while every worker is
// checked out (the health checks need no worker). With WATCHDOG_USEC unset, or with a
// WATCHDOG_PID that is not taskd's, it runs no watchdog loop and sends none: checked on
// daemons started before the watched one and still running after it pinged five times.
func TestSystemdWatchdog(t *testing.T) {
	yaml := "interfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1")
	start := func(env ...string) *taskdtest.Daemon {
		return taskdtest.StartWith(t, yaml, taskdtest.Options{Wait: true, Env: env})
	}
	unset := start("WATCHDOG_USEC=", "WATCHDOG_PID=")
	otherPID := start("WATCHDOG_USEC=200000", "WATCHDOG_PID=1")
	d := start("WATCHDOG_USEC=200000", "WATCHDOG_PID=")

	require.Eventually(t, func() bool { return watchdogPings(d) >= 3 }, 20*time.Second, time.Millisecond,
		"WATCHDOG=1 repeatedly; notifications: %q", d.Notifications())
	assert.Contains(t, d.Logs(), "systemd watchdog on")
	assert.Contains(t, d.Logs(), `"every":"100ms"`)

	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	n := watchdogPings(d)
	require.Eventually(t, func() bool { return watchdogPings(d) >= n+2 }, 20*time.Second, time.Millisecond,
		"WATCHDOG=1 goes on while every worker is checked out")
	co.Release()

	for _, other := range []*taskdtest.Daemon{unset, otherPID} {
		require.NoError(t, other.Stop(20*time.Second))
		notes := other.Notifications()
		assert.Contains(t, notes, "READY=1")
		assert.NotContains(t, notes, "WATCHDOG=1")
		assert.NotContains(t, other.Logs(), "systemd watchdog")
	}
	require.NoError(t, d.Stop(20*time.Second))
}

// TestProbes: the health checks pass while the server serves, again and again (each
// ping's session ends when the check hangs up), and the session ping fails once the
// server drains; a check whose context has ended gives up.
func TestProbes(t *testing.T) {
	zero := 0
	ic := config.Interface{Command: []string{"true"}, MinIdle: &zero, MaxWorkers: 1} // never spawned
	cfg := config.Config{Listen: []string{"unix:" + filepath.Join(taskdtest.TempDir(t), "taskd.sock")},
		Interfaces: map[string]config.Interface{"b": ic, "a": ic}}
	cfg.Normalize()
	srv, err := server.New(cfg, nil, "test")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func() { close(ready) }) }()
	<-ready

	probes := srv.Probes()
	var names []string
	for _, p := range probes {
		names = append(names, p.Name)
	}
	assert.Equal(t, []string{"session ping", "pool locks"}, names)
	for range 20 {
		for _, p := range probes {
			require.NoError(t, p.Check(ctxT(t)), p.Name)
		}
	}
	ended, end := context.WithCancel(context.Background())
	end()
	assert.ErrorIs(t, probes[0].Check(ended), context.Canceled)

	cancel()
	require.NoError(t, <-done)
	assert.ErrorContains(t, probes[0].Check(ctxT(t)), "draining")
	for _, p := range probes[1:] {
		assert.NoError(t, p.Check(ctxT(t)), "%s: a closed pool's lock is still free", p.Name)
	}
}
