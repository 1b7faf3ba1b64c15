package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// giveUp makes a call on a new checkout and gives up on it after 200ms; it returns the
// worker's pid.
func giveUp(t *testing.T, c *client.Client, method string) int {
	t.Helper()
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer co.Release()
	p := pid(t, co)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, co.Call(ctx, method, nil), context.DeadlineExceeded)
	return p
}

// TestCancelGrace: a worker whose call was given up is retired if it answers the cancel
// within cancel_grace (never reused), and killed at once when cancel_grace is 0; a reload
// gives running workers a new cancel_grace.
func TestCancelGrace(t *testing.T) {
	yaml := func(grace string) string {
		return "interfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1\ncancel_grace: "+grace)
	}
	d := taskdtest.Start(t, yaml("10s"))
	c := newClient(t, d, "echo")

	// "wait" answers when its cancel comes.
	first := giveUp(t, c, "wait")
	taskdtest.RequireGone(t, []int{first}, 20*time.Second)
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits[client.ExitReleased] == 1 },
		20*time.Second, 5*time.Millisecond, "retired, not killed: %v", status(t, c, "echo").Exits)
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	assert.NotEqual(t, first, pid(t, co), "a worker whose call was cancelled is not reused")
	co.Release()

	// Reloaded live: the running worker gets cancel_grace 0, and is killed at once.
	rewrite(t, d, yaml("0s"))
	rep, err := c.Reload(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, []string{"cancel_grace"}, rep.Interfaces[0].Keys)
	giveUp(t, c, "wait")
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits[client.ExitKilled] == 1 },
		20*time.Second, 5*time.Millisecond, "killed at once: %v", status(t, c, "echo").Exits)
	assert.Equal(t, uint64(1), status(t, c, "echo").Exits[client.ExitReleased])
}
