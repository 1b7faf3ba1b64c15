package server_test

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// TestCallIdempotentRetriesALostWorker: a call whose worker dies before answering is run
// again on another worker by CallIdempotent, and counted; Call does not run it again.
func TestCallIdempotentRetriesALostWorker(t *testing.T) {
	for _, idempotent := range []bool{true, false} {
		record := filepath.Join(t.TempDir(), "record")
		d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1", "TASKD_TEST_RECORD", record))
		c := newClient(t, d, "echo")
		var err error
		if idempotent {
			err = c.CallIdempotent(ctxT(t), "recordcrash", nil)
		} else {
			err = c.Call(ctxT(t), "recordcrash", nil)
		}
		if !idempotent {
			require.ErrorIs(t, err, client.ErrWorkerLost)
			assert.Equal(t, 1, runs(record), "Call does not run it again")
			assert.Zero(t, c.Stats().Retries)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, 2, runs(record), "the first run crashed, the retry answered")
		assert.Equal(t, int64(1), c.Stats().Retries)
	}
}

// TestCallIdempotentNeverRetriesARemoteError: a method that raised ran: it is not run again.
func TestCallIdempotentNeverRetriesARemoteError(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	c := newClient(t, d, "echo")
	var re *client.RemoteError
	require.ErrorAs(t, c.CallIdempotent(ctxT(t), "fail", nil), &re)
	assert.Zero(t, c.Stats().Retries)
}

// TestCallIdempotentAcrossADaemonRestart: the daemon dies while the call runs; the call is
// run again on the restarted daemon (it is marked safe to), and succeeds.
func TestCallIdempotentAcrossADaemonRestart(t *testing.T) {
	record := filepath.Join(t.TempDir(), "record")
	yaml := "interfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1", "TASKD_TEST_RECORD", record)
	d := taskdtest.Start(t, yaml)
	c := newClient(t, d, "echo")
	errc := make(chan error, 1)
	go func() { errc <- c.CallIdempotent(ctxT(t), "record", nil, 1000) }()
	require.Eventually(t, func() bool { return runs(record) == 1 }, 20*time.Second, time.Millisecond, "the call runs")
	require.NoError(t, d.Signal(syscall.SIGKILL))
	<-d.Exited()
	taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: d.Dir, Wait: true})
	require.NoError(t, <-errc)
	assert.Equal(t, 2, runs(record), "run once on each daemon")
	assert.Equal(t, int64(1), c.Stats().Retries)
}
