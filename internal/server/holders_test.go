package server_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// logLines returns taskd's log records whose message contains msg, decoded.
func logLines(t *testing.T, d *taskdtest.Daemon, msg string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(d.Logs(), "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			recs = append(recs, rec)
		}
	}
	return recs
}

// TestCheckoutsShowHolder: the checkouts report names each checkout's holder as the
// kernel sees it (this test process's pid and uid) and as the client named itself, with
// its worker, its calls and the call running now.
func TestCheckoutsShowHolder(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1")+
		taskdtest.WorkerYAML("other", "raw", "min_idle: 0"))
	c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.Name = "holders-test" })
	ctx := ctxT(t)

	list, err := c.Checkouts(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, list)

	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co.Release()
	wpid := pid(t, co)
	p := co.Go("sleep", 400)

	require.Eventually(t, func() bool {
		list, err = c.Checkouts(ctx, "echo")
		require.NoError(t, err)
		return len(list) == 1 && list[0].Method == "sleep"
	}, 5*time.Second, 10*time.Millisecond)
	ci := list[0]
	assert.Equal(t, "echo", ci.Interface)
	assert.Equal(t, wpid, ci.PID)
	assert.NotEmpty(t, ci.Worker)
	assert.Equal(t, os.Getpid(), ci.Holder.PID, "the holder is this process")
	assert.Equal(t, os.Getuid(), ci.Holder.UID)
	assert.Equal(t, os.Getgid(), ci.Holder.GID)
	assert.Equal(t, "holders-test", ci.Holder.Name)
	assert.Equal(t, uint64(2), ci.Calls, "pid and sleep")
	assert.Positive(t, ci.Held)
	assert.Positive(t, ci.CallRunning)
	assert.False(t, ci.Warn, "checkout_warn_after is off")
	require.NoError(t, p.Wait(ctx, nil))

	list, err = c.Checkouts(ctx, "other")
	require.NoError(t, err)
	assert.Empty(t, list, "filtered by interface")
	_, err = c.Checkouts(ctx, "nope")
	assert.ErrorIs(t, err, client.ErrUnknownInterface)

	// Without Config.Name, the client names itself after its program.
	c2 := newClient(t, d, "echo")
	co2, err := c2.Checkout(ctx)
	require.NoError(t, err)
	list, err = c.Checkouts(ctx, "echo")
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, filepath.Base(os.Args[0]), list[1].Holder.Name)
	assert.Less(t, list[0].ID, list[1].ID, "sorted by id")

	co.Release()
	co2.Release()
	require.Eventually(t, func() bool {
		list, err = c.Checkouts(ctx, "")
		require.NoError(t, err)
		return len(list) == 0
	}, 5*time.Second, 10*time.Millisecond, "released checkouts leave the report")
}

// TestCheckoutWarnAfter: a checkout held past checkout_warn_after is logged once, with
// its holder and its running call, counted in the status, and marked in the report.
func TestCheckoutWarnAfter(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\ncheckout_warn_after: 200ms"))
	c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.Name = "forgetful" })
	ctx := ctxT(t)

	quick, err := c.Checkout(ctx) // released in time: never reported
	require.NoError(t, err)
	require.NoError(t, quick.Call(ctx, "echo", nil))
	quick.Release()

	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co.Release()
	p := co.Go("sleep", 1500)
	const msg = "checkout held longer than checkout_warn_after"
	require.Eventually(t, func() bool { return len(logLines(t, d, msg)) > 0 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // several more sweeps
	recs := logLines(t, d, msg)
	require.Len(t, recs, 1, "logged once")
	rec := recs[0]
	assert.Equal(t, "warn", rec["level"])
	assert.Equal(t, "forgetful", rec["client"])
	assert.Equal(t, "echo", rec["interface"])
	assert.Equal(t, "sleep", rec["method"])
	assert.EqualValues(t, os.Getpid(), rec["peer_pid"])

	list, err := c.Checkouts(ctx, "echo")
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.True(t, list[0].Warn)
	assert.Equal(t, uint64(1), status(t, c, "echo").HeldTooLong)
	require.NoError(t, p.Wait(ctx, nil))
}

// TestSlowCall: a call that runs longer than slow_call is logged when it ends, with its
// duration; a quick one is not.
func TestSlowCall(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nslow_call: 150ms"))
	c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.Name = "slowpoke" })
	ctx := ctxT(t)

	require.NoError(t, c.Call(ctx, "echo", nil, "quick"))
	require.NoError(t, c.Call(ctx, "sleep", nil, 300))
	require.NoError(t, c.Call(ctx, "echo", nil, "quick"))
	require.Eventually(t, func() bool { return len(logLines(t, d, `"slow call"`)) > 0 }, 5*time.Second, 10*time.Millisecond)
	recs := logLines(t, d, `"slow call"`)
	require.Len(t, recs, 1, d.Logs())
	rec := recs[0]
	assert.Equal(t, "warn", rec["level"])
	assert.Equal(t, "sleep", rec["method"])
	assert.Equal(t, "slowpoke", rec["client"])
	assert.Equal(t, "echo", rec["interface"])
	assert.NotEmpty(t, rec["worker"])
	s, _ := rec["duration"].(string) // as in the config: "301.2ms"
	dur, err := time.ParseDuration(s)
	require.NoError(t, err, "duration %v", rec["duration"])
	assert.GreaterOrEqual(t, dur, 300*time.Millisecond)
	assert.Less(t, dur, 5*time.Second)
	assert.Equal(t, uint64(1), status(t, c, "echo").SlowCalls)
}
