package pool_test

import (
	"cmp"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/worker"
)

// rollSpawner starts workers with TASKD_TEST_GEN=tag in their environment, to tell them
// from the pool's first ones (tagOf). Spawn n uses modes[n-1] (the last one after that);
// spawns after the first free wait for gate if set. The embedded spawner counts and records.
type rollSpawner struct {
	spawner
	modes []string
	tag   string
	setup time.Duration // SetupTimeout; 0: 5s
	free  int
	gate  chan struct{}
}

func (s *rollSpawner) spawn(ctx context.Context, id string, onExit func(*worker.Worker)) (*worker.Worker, error) {
	s.mu.Lock()
	s.n++
	n := s.n
	s.mu.Unlock()
	if s.gate != nil && n > s.free {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	w, err := worker.Start(ctx, worker.Config{
		Interface: "t", ID: id, Command: []string{os.Args[0]},
		Env: map[string]string{"TASKD_TEST_WORKER": s.modes[min(n, len(s.modes))-1], "TASKD_TEST_GEN": s.tag,
			"GORACE": "atexit_sleep_ms=0"},
		SetupTimeout: cmp.Or(s.setup, 5*time.Second), OnExit: onExit,
	})
	if w != nil {
		s.mu.Lock()
		s.pids = append(s.pids, w.PID())
		s.mu.Unlock()
	}
	return w, err
}

func (s *rollSpawner) started() []int { return startedBy(&s.spawner) }

func startedBy(sp *spawner) []int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return slices.Clone(sp.pids)
}

// liveChildren returns this process's live children: workers, failed starts included.
func liveChildren() []int {
	var out []int
	for _, pid := range procfs.Children(os.Getpid()) {
		if taskdtest.Alive(pid) {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// track closes p when the test ends (before newPool's cleanup) and checks that every worker
// process is gone: the spawners' and any other child of the test process.
func track(t *testing.T, p *pool.Pool, sps ...*rollSpawner) {
	t.Helper()
	t.Cleanup(func() {
		p.Close()
		var pids []int
		for _, s := range sps {
			pids = append(pids, s.started()...)
		}
		taskdtest.RequireGone(t, pids, 5*time.Second)
		assert.Eventually(t, func() bool { return len(liveChildren()) == 0 }, 5*time.Second, 10*time.Millisecond,
			"worker processes left after Close")
	})
}

// tagOf returns the TASKD_TEST_GEN of the leased worker's environment ("" for the pool's
// first workers).
func tagOf(t *testing.T, l *pool.Lease) string {
	t.Helper()
	ch := make(chan worker.Reply, 1)
	_, err := l.Worker().Call("env", []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.Err)
	var env []string
	require.NoError(t, json.Unmarshal(r.Result, &env))
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "TASKD_TEST_GEN="); ok {
			return v
		}
	}
	return ""
}

// byState counts the workers of st by State; gens lists the generations of those not
// retiring, oldest first.
func byState(st pool.Stats) map[string]int {
	m := map[string]int{}
	for _, w := range st.Workers {
		m[w.State]++
	}
	return m
}

func gens(st pool.Stats) []int {
	var g []int
	for _, w := range st.Workers {
		if w.State != "retiring" {
			g = append(g, w.Gen)
		}
	}
	return g
}

func waitIdle(t *testing.T, p *pool.Pool, n int) {
	t.Helper()
	require.Eventually(t, func() bool { st := p.Stats(); return st.Idle == n && st.Starting == 0 }, 10*time.Second, time.Millisecond)
}

type rollResult struct {
	gen int
	err error
}

func rollAsync(ctx context.Context, p *pool.Pool, sp *rollSpawner) <-chan rollResult {
	ch := make(chan rollResult, 1)
	go func() {
		gen, err := p.Roll(ctx, sp.spawn)
		ch <- rollResult{gen, err}
	}()
	return ch
}

func await(t *testing.T, ch <-chan rollResult) rollResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Roll did not return")
		return rollResult{}
	}
}

func TestRollReplacesWorkers(t *testing.T) {
	p, sp1 := newPool(t, "raw", pool.Config{MinIdle: 2, MaxWorkers: 2})
	sp2 := &rollSpawner{modes: []string{"raw"}, tag: "2"}
	track(t, p, sp2)
	waitIdle(t, p, 2)
	held := acquire(t, p)
	heldPid := pidOf(t, held)
	idlePid := slices.DeleteFunc(startedBy(sp1), func(pid int) bool { return pid == heldPid })
	require.Len(t, idlePid, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	gen, err := p.Roll(ctx, sp2.spawn)
	require.NoError(t, err)
	require.Equal(t, 2, gen)
	st := p.Stats()
	assert.Equal(t, 2, st.Generation)
	assert.Equal(t, 2, st.Idle)
	assert.Len(t, sp2.started(), 2)

	// The old idle worker retired at the take-over.
	require.Eventually(t, func() bool { return !taskdtest.Alive(idlePid[0]) && p.Stats().Exits[pool.ExitReload] == 1 },
		10*time.Second, time.Millisecond, "the idle gen-1 worker is retired at the take-over")

	l := acquire(t, p)
	newPid := pidOf(t, l)
	assert.Contains(t, sp2.started(), newPid, "a new checkout gets a new worker")
	assert.Equal(t, "2", tagOf(t, l))
	l.Release(false)
	assert.Equal(t, 2, p.Stats().Idle, "a gen-2 worker released while a gen-1 lease is held is pooled, not retired")
	l = acquire(t, p)
	assert.Equal(t, newPid, pidOf(t, l), "so the next checkout gets it again")
	l.Release(false)

	// The held lease of generation 1 goes on until it is released.
	assert.True(t, taskdtest.Alive(heldPid))
	callOK(t, held, "echo", "[1]")
	assert.Empty(t, tagOf(t, held))
	st = p.Stats()
	i := slices.IndexFunc(st.Workers, func(w pool.WorkerStats) bool { return w.PID == heldPid })
	require.GreaterOrEqual(t, i, 0)
	assert.Equal(t, 1, st.Workers[i].Gen)
	held.Release(false)
	require.Eventually(t, func() bool {
		st := p.Stats()
		return !taskdtest.Alive(heldPid) && st.Exits[pool.ExitReload] >= 2 && st.Live == 2
	}, 10*time.Second, time.Millisecond, "the held gen-1 worker retires at release")
	assert.Equal(t, []int{2, 2}, gens(p.Stats()))
	assert.EqualValues(t, 2, p.Stats().Exits[pool.ExitReload], "only the two gen-1 workers ended")
}

func TestRollKeepsCapacity(t *testing.T) {
	p, sp1 := newPool(t, "raw", pool.Config{MinIdle: 2, MaxWorkers: 2})
	sp2 := &rollSpawner{modes: []string{"slowready"}, tag: "2", free: 1, gate: make(chan struct{})}
	track(t, p, sp2)
	waitIdle(t, p, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := rollAsync(ctx, p, sp2)

	// One new worker is ready and warming; the other waits at the gate.
	require.Eventually(t, func() bool { return byState(p.Stats())["warming"] == 1 }, 10*time.Second, time.Millisecond)
	st := p.Stats()
	assert.Equal(t, 1, st.Generation)
	assert.Equal(t, 2, st.Idle, "warming workers serve nothing")
	assert.Equal(t, 3, st.Live)
	l := p.TryAcquire()
	require.NotNil(t, l, "a checkout during the roll is served at once")
	assert.Contains(t, startedBy(sp1), pidOf(t, l), "by the current generation")
	assert.Empty(t, tagOf(t, l))
	l.Release(false)

	type sample struct{ idle, warming, gen int }
	var samples []sample
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(res) == 0 {
			st := p.Stats()
			samples = append(samples, sample{st.Idle, byState(st)["warming"], st.Generation})
			time.Sleep(time.Millisecond) // sampling, not timing
		}
	}()
	close(sp2.gate)
	<-done
	r := await(t, res)
	require.NoError(t, r.err)
	assert.Equal(t, 2, r.gen)
	require.NotEmpty(t, samples)
	assert.Equal(t, 1, samples[0].gen, "sampling began before the take-over")
	for i, s := range samples {
		require.GreaterOrEqual(t, s.idle, 2, "sample %d of %d: idle dipped during the roll (%+v)", i, len(samples), s)
	}

	st = p.Stats()
	assert.Equal(t, 2, st.Idle)
	assert.Equal(t, []int{2, 2}, gens(st))
	require.Eventually(t, func() bool { st := p.Stats(); return st.Live == 2 && st.Exits[pool.ExitReload] == 2 },
		10*time.Second, time.Millisecond)
	taskdtest.RequireGone(t, startedBy(sp1), 5*time.Second)
}

func TestRollFailureChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sp      *rollSpawner
		discard uint64 // warming workers stopped when the roll is abandoned
		check   func(t *testing.T, err error)
	}{
		{"exitnow", &rollSpawner{modes: []string{"exitnow"}}, 0, func(t *testing.T, err error) {
			assert.Contains(t, err.Error(), "cannot open database")
		}},
		{"neverready", &rollSpawner{modes: []string{"neverready"}, setup: 300 * time.Millisecond}, 0,
			func(t *testing.T, err error) { assert.ErrorIs(t, err, worker.ErrSetupTimeout) }},
		{"one ready, one fails", &rollSpawner{modes: []string{"raw", "exitnow"}, free: 1, gate: make(chan struct{})}, 1,
			func(t *testing.T, err error) { assert.Contains(t, err.Error(), "cannot open database") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, sp1 := newPool(t, "raw", pool.Config{MinIdle: 2, MaxWorkers: 2})
			sp2 := tc.sp
			sp2.tag = "2"
			track(t, p, sp2)
			waitIdle(t, p, 2)
			old := startedBy(sp1)
			slices.Sort(old)
			res := rollAsync(context.Background(), p, sp2)
			if sp2.gate != nil {
				require.Eventually(t, func() bool { return byState(p.Stats())["warming"] == 1 }, 10*time.Second, time.Millisecond)
				close(sp2.gate)
			}
			r := await(t, res)
			require.Error(t, r.err)
			tc.check(t, r.err)
			assert.Equal(t, 1, r.gen)

			require.Eventually(t, func() bool {
				st := p.Stats()
				return sp2.spawns() == 2 && slices.Equal(liveChildren(), old) && st.Live == 2 && st.Exits[pool.ExitReload] == tc.discard
			}, 10*time.Second, time.Millisecond, "the new generation's processes are gone")
			st := p.Stats()
			assert.Equal(t, 1, st.Generation)
			assert.Zero(t, byState(st)["warming"])
			assert.Equal(t, []int{1, 1}, gens(st))
			assert.Equal(t, 2, st.Idle)
			assert.Empty(t, st.LastError, "the current generation is not held back")
			l := acquire(t, p)
			assert.Contains(t, old, pidOf(t, l))
			l.Release(false)

			// A later roll can still succeed.
			sp3 := &rollSpawner{modes: []string{"raw"}, tag: "3"}
			track(t, p, sp3)
			gen, err := p.Roll(context.Background(), sp3.spawn)
			require.NoError(t, err)
			assert.Equal(t, 2, gen)
			l = acquire(t, p)
			assert.Equal(t, "3", tagOf(t, l))
			l.Release(false)
		})
	}
}

func TestRollContextCancelled(t *testing.T) {
	p, sp1 := newPool(t, "raw", pool.Config{MinIdle: 2, MaxWorkers: 2})
	sp2 := &rollSpawner{modes: []string{"slowready"}, tag: "2", free: 1, gate: make(chan struct{})}
	track(t, p, sp2)
	waitIdle(t, p, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := rollAsync(ctx, p, sp2)
	require.Eventually(t, func() bool { return byState(p.Stats())["warming"] == 1 }, 10*time.Second, time.Millisecond)
	cancel()
	r := await(t, res)
	require.ErrorIs(t, r.err, context.Canceled)
	assert.Equal(t, 1, r.gen)
	assert.Equal(t, 1, p.Generation())

	warm := sp2.started()
	require.Len(t, warm, 1)
	taskdtest.RequireGone(t, warm, 5*time.Second)
	// The one that was still starting is stopped once it is ready.
	close(sp2.gate)
	require.Eventually(t, func() bool {
		st := p.Stats()
		return len(sp2.started()) == 2 && st.Exits[pool.ExitReload] == 2 && st.Live == 2
	}, 10*time.Second, time.Millisecond)
	taskdtest.RequireGone(t, sp2.started(), 5*time.Second)
	st := p.Stats()
	assert.Zero(t, byState(st)["warming"])
	assert.Equal(t, []int{1, 1}, gens(st))
	l := acquire(t, p)
	assert.Contains(t, startedBy(sp1), pidOf(t, l))
	l.Release(false)
}

func TestRollAndClose(t *testing.T) {
	p, sp1 := newPool(t, "raw", pool.Config{MinIdle: 2, MaxWorkers: 2})
	sp2 := &rollSpawner{modes: []string{"slowready"}, tag: "2", free: 1, gate: make(chan struct{})}
	track(t, p, sp2)
	waitIdle(t, p, 2)
	res := rollAsync(context.Background(), p, sp2)
	require.Eventually(t, func() bool { return byState(p.Stats())["warming"] == 1 }, 10*time.Second, time.Millisecond)
	p.Close() // returns, though a roll is in progress
	r := await(t, res)
	require.ErrorIs(t, r.err, pool.ErrShuttingDown)
	assert.Equal(t, 1, r.gen)
	taskdtest.RequireGone(t, append(startedBy(sp1), sp2.started()...), 5*time.Second)
	assert.Empty(t, liveChildren())
	assert.Zero(t, p.Stats().Live)

	gen, err := p.Roll(context.Background(), sp2.spawn)
	require.ErrorIs(t, err, pool.ErrShuttingDown, "no roll after Close")
	assert.Equal(t, 1, gen)
}

func TestReconfigure(t *testing.T) {
	t.Run("raise min_idle", func(t *testing.T) {
		cfg := pool.Config{MinIdle: 0, MaxWorkers: 3}
		p, sp := newPool(t, "raw", cfg)
		track(t, p)
		st := p.Stats()
		require.Zero(t, st.Live+st.Starting)
		cfg.MinIdle = 2
		p.Reconfigure(cfg, nil)
		waitIdle(t, p, 2)
		assert.Equal(t, 2, sp.spawns())
		assert.Equal(t, 2, p.Stats().MinIdle)
	})
	t.Run("lower max_workers with idle workers", func(t *testing.T) {
		cfg := pool.Config{MinIdle: 3, MaxWorkers: 3}
		p, sp := newPool(t, "raw", cfg)
		track(t, p)
		waitIdle(t, p, 3)
		cfg.MaxWorkers = 1
		p.Reconfigure(cfg, nil)
		st := p.Stats()
		assert.Equal(t, 1, st.Idle, "idle workers above max_workers retire at once")
		assert.Equal(t, 1, st.MaxWorkers)
		assert.Equal(t, 1, st.MinIdle, "min_idle is capped by max_workers")
		require.Eventually(t, func() bool { st := p.Stats(); return st.Live == 1 && st.Exits[pool.ExitReload] == 2 },
			10*time.Second, time.Millisecond)
		assert.Equal(t, 3, sp.spawns())
	})
	t.Run("lower max_workers with busy workers", func(t *testing.T) {
		cfg := pool.Config{MinIdle: 1, MaxWorkers: 2}
		p, _ := newPool(t, "raw", cfg)
		track(t, p)
		a, b := acquire(t, p), acquire(t, p)
		pa, pb := pidOf(t, a), pidOf(t, b)
		cfg.MaxWorkers = 1
		p.Reconfigure(cfg, nil)
		assert.True(t, taskdtest.Alive(pa) && taskdtest.Alive(pb), "busy workers keep their checkout")
		callOK(t, a, "echo", "[1]")
		a.Release(false)
		require.Eventually(t, func() bool { return !taskdtest.Alive(pa) && p.Stats().Exits[pool.ExitReload] == 1 },
			10*time.Second, time.Millisecond, "the first release retires its worker")
		b.Release(false)
		st := p.Stats()
		assert.Equal(t, 1, st.Idle, "the second release pools its worker")
		assert.Equal(t, 1, st.Live)
		l := acquire(t, p)
		assert.Equal(t, pb, pidOf(t, l))
		l.Release(false)
		assert.EqualValues(t, 1, p.Stats().Exits[pool.ExitReload])
	})
	t.Run("max_checkouts", func(t *testing.T) {
		cfg := pool.Config{MinIdle: 1, MaxWorkers: 1}
		p, _ := newPool(t, "raw", cfg)
		track(t, p)
		var pids []int
		checkout := func() {
			l := acquire(t, p)
			pids = append(pids, pidOf(t, l))
			l.Release(false)
		}
		checkout()
		checkout()
		cfg.MaxCheckouts = 2
		p.Reconfigure(cfg, nil)
		for range 4 { // the first: the worker's third, over the new limit: it retires at release
			checkout()
		}
		assert.Equal(t, pids[0], pids[2])
		assert.NotEqual(t, pids[2], pids[3])
		assert.Equal(t, pids[3], pids[4])
		assert.NotEqual(t, pids[4], pids[5])
		require.Eventually(t, func() bool { return p.Stats().Exits[pool.ExitMaxCheckouts] == 2 }, 10*time.Second, time.Millisecond)
	})
	t.Run("call_timeout", func(t *testing.T) {
		cfg := pool.Config{MinIdle: 1, MaxWorkers: 1, CallTimeout: time.Hour}
		p, _ := newPool(t, "raw", cfg)
		track(t, p)
		l := acquire(t, p)
		pid := pidOf(t, l)
		ch := make(chan worker.Reply, 1)
		_, err := l.Worker().Call("sleep", []byte("[60000]"), func(r worker.Reply) { ch <- r.Clone() })
		require.NoError(t, err)
		cfg.CallTimeout = 100 * time.Millisecond
		p.Reconfigure(cfg, nil)
		select {
		case r := <-ch:
			require.ErrorIs(t, r.Err, worker.ErrCallTimeout)
		case <-time.After(20 * time.Second):
			t.Fatal("the running call was not killed by the lowered call_timeout")
		}
		require.ErrorIs(t, l.Worker().Err(), worker.ErrCallTimeout)
		l.Release(false)
		require.Eventually(t, func() bool { return p.Stats().Exits[pool.ExitCallTimeout] == 1 }, 10*time.Second, time.Millisecond)
		taskdtest.RequireGone(t, []int{pid}, 5*time.Second)
	})
}

func TestReconfigureIdleTimeout(t *testing.T) {
	cfg := pool.Config{MinIdle: 1, MaxWorkers: 3, IdleTimeout: -1}
	p, _ := newPool(t, "raw", cfg)
	track(t, p)
	var ls []*pool.Lease
	for range 3 {
		ls = append(ls, acquire(t, p))
	}
	for _, l := range ls {
		l.Release(false)
	}
	time.Sleep(300 * time.Millisecond) // idle_timeout is off: nothing may be reaped meanwhile
	require.Equal(t, 3, p.Stats().Idle)
	cfg.IdleTimeout = 50 * time.Millisecond
	p.Reconfigure(cfg, nil)
	require.Eventually(t, func() bool {
		st := p.Stats()
		return st.Live == 1 && st.Idle == 1 && st.Exits[pool.ExitIdleTimeout] == 2
	}, 10*time.Second, 5*time.Millisecond)
}
