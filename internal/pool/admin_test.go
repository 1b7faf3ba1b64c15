package pool_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// Pause refuses new and waiting checkouts with its error while a held one goes on;
// Resume serves again; a Drain during a pause still drains, for good.
func TestPauseResumeAndDrainDuringPause(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1})
	held := acquire(t, p)

	waited := make(chan error, 1)
	go func() {
		_, err := p.Acquire(context.Background())
		waited <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().Queued == 1 }, 10*time.Second, time.Millisecond)
	errPaused := errors.New("paused")
	p.Pause(errPaused)
	assert.ErrorIs(t, <-waited, errPaused, "the waiting checkout fails at once")
	_, err := p.Acquire(context.Background())
	assert.ErrorIs(t, err, errPaused)
	assert.Nil(t, p.TryAcquire())
	assert.True(t, p.Stats().Paused)
	pidOf(t, held) // the held checkout works
	held.Release(false)

	assert.True(t, p.Resume())
	assert.False(t, p.Resume(), "not paused any more")
	acquire(t, p).Release(false)

	p.Pause(errPaused)
	p.Drain(nil)
	p.Resume()
	_, err = p.Acquire(context.Background())
	assert.ErrorIs(t, err, pool.ErrShuttingDown, "Resume does not undo a Drain")
}

func TestRetireAndKillWorker(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 2})
	_, _, err := p.RetireWorker("t-99")
	assert.ErrorIs(t, err, pool.ErrNoWorker)

	// Busy: retired at release, and replaced.
	l := acquire(t, p)
	pid := pidOf(t, l)
	w, busy, err := p.RetireWorker(l.Worker().ID())
	require.NoError(t, err)
	assert.True(t, busy)
	assert.Equal(t, pid, w.PID())
	pidOf(t, l) // it still serves its checkout
	l.Release(false)
	taskdtest.RequireGone(t, []int{pid}, 5*time.Second)
	require.Eventually(t, func() bool { return p.Stats().Exits[pool.ExitAdmin] == 1 }, 10*time.Second, time.Millisecond,
		"counted once reaped")

	// Idle, by pid: retired now, and replaced (min_idle).
	l = acquire(t, p)
	pid = pidOf(t, l)
	l.Release(false)
	_, busy, err = p.RetireWorker(strconv.Itoa(pid))
	require.NoError(t, err)
	assert.False(t, busy)
	taskdtest.RequireGone(t, []int{pid}, 5*time.Second)
	require.Eventually(t, func() bool { return p.Stats().Idle == 1 }, 10*time.Second, time.Millisecond)

	// Kill a busy worker: gone now, its calls fail.
	l = acquire(t, p)
	pid = pidOf(t, l)
	_, busy, err = p.KillWorker(l.Worker().ID(), errors.New("killed by test"))
	require.NoError(t, err)
	assert.True(t, busy)
	taskdtest.RequireGone(t, []int{pid}, 5*time.Second)
	l.Release(true)
	require.Eventually(t, func() bool { return p.Stats().Exits[pool.ExitAdmin] == 3 }, 10*time.Second, time.Millisecond)
}
