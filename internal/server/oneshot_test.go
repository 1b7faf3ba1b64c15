package server_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// A one-shot call whose daemon dies while the call runs is not sent again to the
// restarted daemon: it ran once, and its caller learns that it may have run.
func TestOneShotNotResentAfterDaemonDies(t *testing.T) {
	record := filepath.Join(t.TempDir(), "record")
	// max_workers 1: a resent call would run before anything the test sends later.
	yaml := "interfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1", "TASKD_TEST_RECORD", record)
	d := taskdtest.Start(t, yaml)
	c := newClient(t, d, "echo")

	errc := make(chan error, 1)
	go func() { errc <- c.Call(ctxT(t), "record", nil, 1000) }()
	require.Eventually(t, func() bool { return runs(record) == 1 }, 20*time.Second, time.Millisecond, "the call runs")
	d.Signal(syscall.SIGKILL)
	<-d.Exited()

	err := <-errc
	require.ErrorIs(t, err, client.ErrWorkerLost)
	assert.Contains(t, err.Error(), "may or may not have run")
	assert.Contains(t, err.Error(), "echo.record")

	taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: d.Dir, Wait: true})
	require.NoError(t, c.Call(ctxT(t), "record", nil, 0), "the client works with the new daemon")
	assert.Equal(t, 2, runs(record), "the first call ran once, and the second once")
}

// A one-shot call given up while it runs kills its worker; one given up while it waits
// for a worker never runs.
func TestOneShotGivenUpKillsOrSkips(t *testing.T) {
	record := filepath.Join(t.TempDir(), "record")
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1", "TASKD_TEST_RECORD", record))
	c := newClient(t, d, "echo")

	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	held := pid(t, co)
	queued := make(chan error, 1)
	go func() { queued <- c.Call(ctxFor(t, 300*time.Millisecond), "record", nil, 0) }()
	require.Eventually(t, func() bool { return status(t, c, "echo").Queued == 1 }, 20*time.Second, time.Millisecond)
	require.ErrorIs(t, <-queued, context.DeadlineExceeded)
	co.Release()

	// The worker is pooled again, untouched; the abandoned call never ran.
	require.Eventually(t, func() bool { return status(t, c, "echo").Idle == 1 }, 20*time.Second, time.Millisecond)
	assert.Zero(t, runs(record))

	// Given up while it runs: taskd kills the worker, as for a held call's deadline.
	err = c.Call(ctxFor(t, 300*time.Millisecond), "record", nil, 60_000)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, 1, runs(record))
	taskdtest.RequireGone(t, []int{held}, 20*time.Second)
	require.NoError(t, c.Call(ctxT(t), "echo", nil), "a new worker serves")
}

// runs counts the calls of method record so far.
func runs(record string) int {
	b, _ := os.ReadFile(record)
	return bytes.Count(b, []byte("\n"))
}

// ctxFor returns a context that ends after d.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
