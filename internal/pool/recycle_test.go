package pool_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/worker"
)

// A worker retired at release, in a pool at max_workers, has its replacement started at
// once (it drains outside the cap) and keeps running until the replacement is ready.
func TestSpawnBeforeRetireAtMaxWorkers(t *testing.T) {
	p, _ := newPool(t, "slowready", pool.Config{MinIdle: 2, MaxWorkers: 2, MaxCheckouts: 1})
	require.Eventually(t, func() bool { return p.Stats().Idle == 2 }, 10*time.Second, time.Millisecond)
	l := acquire(t, p)
	old := pidOf(t, l)
	l.Release(false)

	st := p.Stats()
	assert.Equal(t, 1, st.Starting, "the replacement starts at once, though the pool is at max_workers")
	assert.Equal(t, 2, st.Live, "the retiring worker is still live")
	assert.True(t, taskdtest.Alive(old), "the retiring worker runs until its replacement is ready")

	require.Eventually(t, func() bool {
		st := p.Stats()
		return st.Idle == 2 && st.Live == 2 && st.Starting == 0 && !taskdtest.Alive(old)
	}, 10*time.Second, time.Millisecond, "the old worker is stopped once the new one is ready")
	assert.EqualValues(t, 1, p.Stats().Exits[pool.ExitMaxCheckouts])
}

// Without a replacement needed (above min_idle, nobody waiting), a retired worker is
// stopped at once.
func TestRetireWithoutReplacementStopsAtOnce(t *testing.T) {
	p, sp := newPool(t, "raw", pool.Config{MinIdle: 0, MaxWorkers: 2})
	l := acquire(t, p)
	l.Release(true)
	require.Eventually(t, func() bool { return p.Stats().Live == 0 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, 1, sp.spawns())
}

func TestExitReasonsAreCounted(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1, MaxCheckouts: 2})
	call := func(l *pool.Lease, method string) {
		ch := make(chan worker.Reply, 1)
		_, err := l.Worker().Call(method, []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
		require.NoError(t, err)
		<-ch
	}
	want := [pool.NumExitReasons]uint64{}
	check := func(r pool.ExitReason) {
		t.Helper()
		want[r]++
		require.Eventually(t, func() bool { return p.Stats().Exits == want }, 10*time.Second, time.Millisecond,
			"after %s: have %v, want %v", r, p.Stats().Exits, want)
	}

	acquire(t, p).Release(false)
	acquire(t, p).Release(false)
	check(pool.ExitMaxCheckouts)

	acquire(t, p).Release(true)
	check(pool.ExitReleased)

	l := acquire(t, p)
	call(l, "bye")
	l.Release(false)
	check(pool.ExitBye)

	l = acquire(t, p)
	ch := make(chan worker.Reply, 1)
	_, err := l.Worker().Call("crash", []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	<-ch
	l.Release(false)
	check(pool.ExitCrashed)

	l = acquire(t, p)
	l.Worker().Kill(worker.ErrCallTimeout)
	l.Release(true)
	check(pool.ExitCallTimeout)

	l = acquire(t, p)
	l.Worker().Kill(errors.New("checkout aborted"))
	l.Release(true)
	check(pool.ExitKilled)

	require.Eventually(t, func() bool { return p.Stats().Idle == 1 }, 10*time.Second, time.Millisecond)
	p.Close()
	want[pool.ExitShutdown]++
	assert.Equal(t, want, p.Stats().Exits)
	for r := range pool.NumExitReasons {
		assert.NotContains(t, r.String(), "ExitReason", "every reason has a name")
	}
}
