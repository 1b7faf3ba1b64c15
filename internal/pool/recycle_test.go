package pool_test

import (
	"errors"
	"slices"
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

func callOK(t *testing.T, l *pool.Lease, method string, args string) {
	t.Helper()
	ch := make(chan worker.Reply, 1)
	_, err := l.Worker().Call(method, []byte(args), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	require.NoError(t, (<-ch).Err)
}

// max_age retires idle workers once they come of age (replacements first), and a busy
// one only when it is released.
func TestMaxAge(t *testing.T) {
	const age = 300 * time.Millisecond
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 2, MaxWorkers: 2, MaxAge: age, RecycleJitter: 0.1})
	require.Eventually(t, func() bool { return p.Stats().Idle == 2 }, 10*time.Second, time.Millisecond)
	l := acquire(t, p)
	held := pidOf(t, l)
	require.Eventually(t, func() bool { return p.Stats().Exits[pool.ExitMaxAge] >= 1 }, 10*time.Second, time.Millisecond,
		"the idle worker is recycled")
	time.Sleep(2 * age) // past the held worker's age, which must not end its checkout
	assert.True(t, taskdtest.Alive(held), "a busy worker is never recycled mid-checkout")
	callOK(t, l, "echo", "[1]")
	l.Release(false)
	require.Eventually(t, func() bool {
		return !taskdtest.Alive(held) && p.Stats().Exits[pool.ExitMaxAge] >= 2
	}, 10*time.Second, time.Millisecond, "the busy worker is recycled at release")
}

// Each worker gets its own age limit within the jitter, so workers started together are
// not all retired together.
func TestRecycleJitterSpreadsRetirement(t *testing.T) {
	const age = 400 * time.Millisecond
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 4, MaxWorkers: 4, MaxAge: age, RecycleJitter: 0.5})
	require.Eventually(t, func() bool { return p.Stats().Idle == 4 }, 10*time.Second, time.Millisecond)
	var lifetimes []time.Duration
	seen := map[int]time.Time{}
	deadline := time.Now().Add(10 * time.Second)
	for len(lifetimes) < 4 && time.Now().Before(deadline) {
		now := time.Now()
		live := map[int]bool{}
		for _, w := range p.Stats().Workers {
			live[w.PID] = true
			if _, ok := seen[w.PID]; !ok {
				seen[w.PID] = w.Started
			}
		}
		for pid, started := range seen {
			if !live[pid] {
				lifetimes = append(lifetimes, now.Sub(started))
				delete(seen, pid)
			}
		}
		time.Sleep(5 * time.Millisecond) // sampling, not timing: the assertions allow slack
	}
	require.GreaterOrEqual(t, len(lifetimes), 2)
	spread := slices.Max(lifetimes) - slices.Min(lifetimes)
	t.Logf("lifetimes %v", lifetimes)
	assert.Greater(t, spread, 20*time.Millisecond, "with 50%% jitter, lifetimes differ")
}

// max_rss retires a worker whose memory grows past the limit: at release if it is busy.
func TestMaxRSS(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1, MaxRSS: 100 << 20,
		SampleEvery: 20 * time.Millisecond})
	l := acquire(t, p)
	pid := pidOf(t, l)
	callOK(t, l, "alloc", "[150]")
	time.Sleep(100 * time.Millisecond) // several samples while busy: it must keep its checkout
	assert.True(t, taskdtest.Alive(pid))
	callOK(t, l, "echo", "[1]")
	l.Release(false)
	require.Eventually(t, func() bool { return p.Stats().Exits[pool.ExitMaxRSS] == 1 }, 10*time.Second, time.Millisecond)

	// Over the limit while idle: alloclater allocates after its reply, while the worker
	// goes back idle, and the sampler retires it from there.
	l = acquire(t, p)
	callOK(t, l, "alloclater", "[150]")
	l.Release(false)
	require.Eventually(t, func() bool { return p.Stats().Exits[pool.ExitMaxRSS] == 2 }, 10*time.Second, time.Millisecond,
		"an idle worker over the limit is retired")
	require.Eventually(t, func() bool { return p.Stats().Idle == 1 }, 10*time.Second, time.Millisecond)
}

// An idle worker that reaches max_age serves on until its replacement is ready: with
// workers that take 300ms to start, the pool never has fewer than min_idle ready workers
// while they are recycled again and again.
func TestMaxAgeKeepsMinIdleReady(t *testing.T) {
	p, _ := newPool(t, "slowready", pool.Config{MinIdle: 2, MaxWorkers: 2, MaxAge: 500 * time.Millisecond, RecycleJitter: 0.5})
	require.Eventually(t, func() bool { return p.Stats().Idle == 2 }, 10*time.Second, time.Millisecond)
	samples := 0
	for p.Stats().Exits[pool.ExitMaxAge] < 4 {
		st := p.Stats()
		samples++
		require.GreaterOrEqual(t, st.Idle, 2, "ready workers while recycling: %+v", st)
		require.LessOrEqual(t, st.Live-st.Retiring, 2, "serving workers within max_workers: %+v", st)
		time.Sleep(time.Millisecond)
		require.Less(t, samples, 30_000, "4 recycles did not happen")
	}
}
