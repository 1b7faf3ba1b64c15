package server_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Steering a live daemon with admin requests (admin.go), against the real binary.

// TestDrainAndResume: a drained interface refuses new checkouts at once (ErrDraining, not
// retried), a held one keeps working, status shows it; resume serves again.
func TestDrainAndResume(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2"))
	c := newClient(t, d, "echo")
	held, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer held.Release()

	msg, err := c.Drain(ctxT(t), "echo")
	require.NoError(t, err)
	assert.Contains(t, msg, "drained")
	assert.True(t, status(t, c, "echo").Draining)

	start := time.Now()
	_, err = c.Checkout(ctxT(t))
	require.ErrorIs(t, err, client.ErrDraining)
	assert.NotErrorIs(t, err, client.ErrShuttingDown)
	assert.Less(t, time.Since(start), 5*time.Second, "refused at once, not waited for")
	var r []string
	assert.ErrorIs(t, c.Call(ctxT(t), "echo", &r, "x"), client.ErrDraining)
	require.NoError(t, held.Call(ctxT(t), "echo", &r, "held"), "the held checkout goes on")
	assert.Equal(t, []string{"held"}, r)

	_, err = c.Drain(ctxT(t), "nope")
	assert.ErrorIs(t, err, client.ErrUnknownInterface)

	_, err = c.Resume(ctxT(t), "echo")
	require.NoError(t, err)
	assert.False(t, status(t, c, "echo").Draining)
	require.NoError(t, c.Call(ctxT(t), "echo", &r, "again"))
	assert.Equal(t, []string{"again"}, r)
}

// TestKillWorker: the holder of a killed worker gets ErrWorkerLost, and its pid is gone.
func TestKillWorker(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer co.Release()
	p := pid(t, co)

	msg, err := c.KillWorker(ctxT(t), strconv.Itoa(p))
	require.NoError(t, err)
	assert.Contains(t, msg, "killed")
	taskdtest.RequireGone(t, []int{p}, 10*time.Second)
	var r []string
	assert.ErrorIs(t, co.Call(ctxT(t), "echo", &r, "x"), client.ErrWorkerLost)
	co.Release()
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits[client.ExitAdmin] == 1 }, 10*time.Second, 5*time.Millisecond)

	_, err = c.KillWorker(ctxT(t), "echo-999")
	assert.ErrorIs(t, err, client.ErrUnknownWorker)
}

// TestRetireWorker: a busy worker finishes its checkout and is replaced after release;
// an idle one is retired at once, and replaced (min_idle).
func TestRetireWorker(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	var id string
	for _, w := range status(t, c, "echo").Workers {
		if w.PID == p {
			id = w.ID
		}
	}
	require.NotEmpty(t, id)

	msg, err := c.RetireWorker(ctxT(t), id)
	require.NoError(t, err)
	assert.Contains(t, msg, "busy")
	assert.Equal(t, p, pid(t, co), "the busy worker finishes its checkout")
	co.Release()
	taskdtest.RequireGone(t, []int{p}, 10*time.Second)
	co, err = c.Checkout(ctxT(t))
	require.NoError(t, err)
	p2 := pid(t, co)
	assert.NotEqual(t, p, p2, "a new worker serves")
	co.Release()

	require.Eventually(t, func() bool { return status(t, c, "echo").Idle == 1 }, 10*time.Second, 5*time.Millisecond)
	msg, err = c.RetireWorker(ctxT(t), strconv.Itoa(p2))
	require.NoError(t, err)
	assert.Contains(t, msg, "idle")
	taskdtest.RequireGone(t, []int{p2}, 10*time.Second)
	require.Eventually(t, func() bool {
		is := status(t, c, "echo")
		return is.Idle == 1 && is.Exits[client.ExitAdmin] == 2
	}, 10*time.Second, 5*time.Millisecond, "replaced, both exits counted under admin")
}

// TestScaleUntilReload: scale changes min_idle and max_workers live; a reload with the
// file unchanged puts the file's back.
func TestScaleUntilReload(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2"))
	c := newClient(t, d, "echo")
	_, err := c.Scale(ctxT(t), "echo", 3, 2)
	assert.ErrorIs(t, err, client.ErrInvalidRequest, "checked by the client")

	msg, err := c.Scale(ctxT(t), "echo", 2, 4)
	require.NoError(t, err)
	assert.Contains(t, msg, "max_workers 2 → 4")
	require.Eventually(t, func() bool {
		is := status(t, c, "echo")
		return is.MinIdle == 2 && is.MaxWorkers == 4 && is.Idle == 2
	}, 10*time.Second, 5*time.Millisecond)

	_, err = c.Scale(ctxT(t), "echo", 0, 1)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		is := status(t, c, "echo")
		return is.Live == 1 && is.Exits[client.ExitAdmin] == 1
	}, 10*time.Second, 5*time.Millisecond, "the worker above the lowered max_workers exits as the admin's doing")
	assert.Zero(t, status(t, c, "echo").Exits[client.ExitReload])

	rep, err := c.Reload(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, client.ChangeResized, change(t, rep, "echo").Change)
	is := status(t, c, "echo")
	assert.Equal(t, 1, is.MinIdle)
	assert.Equal(t, 2, is.MaxWorkers)
	rep, err = c.Reload(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, client.ChangeUnchanged, change(t, rep, "echo").Change, "the next reload has nothing to undo")
}

// TestAdminOverTCPNotPermitted: a TCP peer is never admin: its admin requests and reloads
// are refused with ErrNotPermitted; status stays open to it.
func TestAdminOverTCPNotPermitted(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	cfg := filepath.Join(dir, "taskd.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("listen: [\"tcp://127.0.0.1:%d\"]\ninterfaces:\n%s", port,
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))), 0o644))
	cmd := exec.Command(taskdtest.Binary(t, "cmd/taskd"), "-c", cfg)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	c, err := client.New(client.Config{Addr: fmt.Sprintf("tcp://127.0.0.1:%d", port), Interface: "echo", Timeout: 20 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	require.Eventually(t, func() bool { _, err := c.Ping(ctxT(t)); return err == nil }, 20*time.Second, 20*time.Millisecond)
	before, err := c.DaemonStatus(ctxT(t))
	require.NoError(t, err)

	_, err = c.Drain(ctxT(t), "echo")
	assert.ErrorIs(t, err, client.ErrNotPermitted)
	_, err = c.Scale(ctxT(t), "echo", 1, 3)
	assert.ErrorIs(t, err, client.ErrNotPermitted)
	_, err = c.KillWorker(ctxT(t), "echo-1")
	assert.ErrorIs(t, err, client.ErrNotPermitted)
	_, err = c.Reload(ctxT(t))
	assert.ErrorIs(t, err, client.ErrNotPermitted)
	st, err := c.DaemonStatus(ctxT(t))
	require.NoError(t, err)
	require.Len(t, st.Interfaces, 1)
	assert.False(t, st.Interfaces[0].Draining)
	assert.Equal(t, before.Interfaces[0].MaxWorkers, st.Interfaces[0].MaxWorkers, "nothing changed")
}
