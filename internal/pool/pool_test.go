package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/worker"
)

func TestMain(m *testing.M) {
	taskdtest.MaybeRunWorker()
	goleak.VerifyTestMain(m)
}

// spawner starts the test binary as a worker in mode and records every pid it started.
type spawner struct {
	mode string
	// exitFirst makes spawn return a worker only once it has exited and the pool's
	// onExit has run: the order that a worker exiting right after "ready" may produce.
	exitFirst bool
	mu        sync.Mutex
	pids      []int
	n         int
}

func (s *spawner) spawn(ctx context.Context, id string, onExit func(*worker.Worker)) (*worker.Worker, error) {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
	exited := make(chan struct{})
	if s.exitFirst {
		next := onExit
		onExit = func(w *worker.Worker) { next(w); close(exited) }
	}
	w, err := worker.Start(ctx, worker.Config{
		Interface: "t", ID: id, Command: []string{os.Args[0]},
		Env:          map[string]string{"TASKD_TEST_WORKER": s.mode, "GORACE": "atexit_sleep_ms=0"},
		SetupTimeout: 5 * time.Second, OnExit: onExit,
	})
	if s.exitFirst && err == nil {
		<-exited
	}
	if w != nil {
		s.mu.Lock()
		s.pids = append(s.pids, w.PID())
		s.mu.Unlock()
	}
	return w, err
}

func (s *spawner) spawns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func newPool(t *testing.T, mode string, cfg pool.Config) (*pool.Pool, *spawner) {
	t.Helper()
	sp := &spawner{mode: mode}
	cfg.Name = "t"
	p := pool.New(cfg, sp.spawn)
	t.Cleanup(func() {
		p.Close()
		sp.mu.Lock()
		pids := append([]int(nil), sp.pids...)
		sp.mu.Unlock()
		taskdtest.RequireGone(t, pids, 5*time.Second)
	})
	return p, sp
}

func acquire(t *testing.T, p *pool.Pool) *pool.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := p.Acquire(ctx)
	require.NoError(t, err)
	return l
}

func pidOf(t *testing.T, l *pool.Lease) int {
	t.Helper()
	ch := make(chan worker.Reply, 1)
	_, err := l.Worker().Call("pid", []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.Err)
	var pid int
	require.NoError(t, json.Unmarshal(r.Result, &pid))
	return pid
}

func TestMinIdle(t *testing.T) {
	t.Run("warm workers before any checkout", func(t *testing.T) {
		p, _ := newPool(t, "raw", pool.Config{MinIdle: 2, MaxWorkers: 4})
		require.Eventually(t, func() bool { return p.Stats().Idle == 2 }, 10*time.Second, time.Millisecond)
		assert.EqualValues(t, 0, p.Stats().Checkouts)
	})
	t.Run("zero spawns nothing until the first checkout", func(t *testing.T) {
		p, sp := newPool(t, "raw", pool.Config{MinIdle: 0, MaxWorkers: 4})
		st := p.Stats()
		assert.Zero(t, st.Starting+st.Live)
		assert.Zero(t, sp.spawns())
		l := acquire(t, p)
		assert.Equal(t, 1, sp.spawns())
		l.Release(false)
	})
}

func TestFIFOUnderSurge(t *testing.T) {
	p, sp := newPool(t, "raw", pool.Config{MinIdle: 5, MaxWorkers: 5})
	require.Eventually(t, func() bool { return p.Stats().Idle == 5 }, 10*time.Second, time.Millisecond)
	var held []*pool.Lease
	for range 5 {
		held = append(held, acquire(t, p))
	}
	type grant struct {
		i int
		l *pool.Lease
	}
	const n = 100
	got := make(chan grant)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got <- grant{i, acquire(t, p)}
		}()
		// Queue them one by one so that their arrival order is known.
		require.Eventually(t, func() bool { return p.Stats().Queued == i+1 }, 10*time.Second, 100*time.Microsecond)
	}
	// Each release frees exactly one worker, which must go to the oldest waiter.
	for k := range n {
		held[0].Release(false)
		held = held[1:]
		g := <-got
		assert.Equal(t, k, g.i, "FIFO: the %d-th grant went to waiter %d", k, g.i)
		held = append(held, g.l)
		st := p.Stats()
		assert.LessOrEqual(t, st.Live+st.Starting, 5)
	}
	wg.Wait()
	for _, l := range held {
		l.Release(false)
	}
	assert.Equal(t, 5, sp.spawns(), "a surge within max_workers spawns nothing more")
	assert.EqualValues(t, n+5, p.Stats().Checkouts)
}

func TestStrictFIFOWithOneWorker(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1})
	first := acquire(t, p)
	const n = 20
	order := make(chan int, n)
	next := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := acquire(t, p)
			order <- i
			<-next
			l.Release(false)
		}()
		require.Eventually(t, func() bool { return p.Stats().Queued == i+1 }, 10*time.Second, 100*time.Microsecond)
	}
	first.Release(false)
	for i := range n {
		assert.Equal(t, i, <-order)
		next <- struct{}{}
	}
	wg.Wait()
}

func TestMaxQueueOverload(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1, MaxQueue: 2})
	held := acquire(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := p.Acquire(ctx)
			assert.ErrorIs(t, err, context.Canceled)
		}()
	}
	require.Eventually(t, func() bool { return p.Stats().Queued == 2 }, 10*time.Second, time.Millisecond)
	_, err := p.Acquire(context.Background())
	require.ErrorIs(t, err, pool.ErrOverloaded)
	cancel()
	wg.Wait()
	assert.Zero(t, p.Stats().Queued, "a waiter that gives up leaves the queue")
	held.Release(false)
}

func TestMaxCheckoutsRecycles(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1, MaxCheckouts: 2})
	var pids []int
	for range 3 {
		l := acquire(t, p)
		pids = append(pids, pidOf(t, l))
		l.Release(false)
	}
	assert.Equal(t, pids[0], pids[1])
	assert.NotEqual(t, pids[1], pids[2])
}

func TestRetireAndBye(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1})
	l := acquire(t, p)
	a := pidOf(t, l)
	l.Release(false)
	l = acquire(t, p)
	assert.Equal(t, a, pidOf(t, l), "a released worker is reused")
	l.Release(true)
	l = acquire(t, p)
	b := pidOf(t, l)
	assert.NotEqual(t, a, b, "a retired worker is not reused")
	ch := make(chan worker.Reply, 1)
	_, err := l.Worker().Call("bye", []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	<-ch
	l.Release(false)
	l = acquire(t, p)
	assert.NotEqual(t, b, pidOf(t, l), "a worker that sent bye is retired")
	l.Release(false)
}

// The pool does not tell a worker that its checkout is over: the holder of the lease does
// (the daemon's checkout, which may write it together with the checkout's last call).
func TestReleaseSendsNoDone(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1})
	for range 3 {
		acquire(t, p).Release(false)
	}
	l := acquire(t, p)
	require.NoError(t, l.Worker().Done())
	ch := make(chan worker.Reply, 1)
	_, err := l.Worker().Call("dones", []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	assert.JSONEq(t, "1", string((<-ch).Result), "only the holder's done reached the worker")
	l.Release(false)
}

func TestIdleWorkerKilledIsNeverHandedOut(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 2})
	for range 5 {
		l := acquire(t, p)
		pid := pidOf(t, l)
		l.Release(false)
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
		// At once: kill returns before the process is dead and long before the pool's
		// waiter has reaped it, yet the checkout must get a live worker.
		l = acquire(t, p)
		assert.NotEqual(t, pid, pidOf(t, l))
		l.Release(false)
	}
}

func TestIdleTimeoutRetiresAboveMinIdle(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 3, IdleTimeout: 100 * time.Millisecond})
	var ls []*pool.Lease
	for range 3 {
		ls = append(ls, acquire(t, p))
	}
	for _, l := range ls {
		l.Release(false)
	}
	assert.Equal(t, 3, p.Stats().Idle)
	require.Eventually(t, func() bool { st := p.Stats(); return st.Live == 1 && st.Idle == 1 }, 10*time.Second, 5*time.Millisecond)
}

func TestUnavailableAndBoundedRespawn(t *testing.T) {
	p, sp := newPool(t, "exitnow", pool.Config{MinIdle: 1, MaxWorkers: 2, BackoffMin: 50 * time.Millisecond, BackoffMax: 400 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := p.Acquire(ctx)
	require.ErrorIs(t, err, pool.ErrUnavailable)
	assert.Contains(t, err.Error(), "cannot open database", "the error carries the worker's stderr")
	// Keep asking for 2 seconds: backoff bounds the spawns.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		_, err := p.Acquire(ctx)
		require.ErrorIs(t, err, pool.ErrUnavailable)
	}
	// 50+100+200+400+400+... ms: at most ~10 attempts in 2s (plus slack for the first).
	assert.LessOrEqual(t, sp.spawns(), 12)
	assert.GreaterOrEqual(t, sp.spawns(), 3)
}

// One failed start (a worker killed from outside while it started, say) does not fail the
// waiting checkout: it gets the next start. Two in a row do.
func TestOneFailedStartIsRetriedForWaiters(t *testing.T) {
	sp := &spawner{mode: "raw"}
	var calls atomic.Int32
	failFirst := func(ctx context.Context, id string, onExit func(*worker.Worker)) (*worker.Worker, error) {
		if calls.Add(1) == 1 {
			return nil, errors.New("killed by signal SIGKILL before it was ready")
		}
		return sp.spawn(ctx, id, onExit)
	}
	p := pool.New(pool.Config{Name: "t", MaxWorkers: 1, BackoffMin: 20 * time.Millisecond}, failFirst)
	defer p.Close()
	l := acquire(t, p)
	l.Release(false)
	assert.Equal(t, int32(2), calls.Load())
	assert.Equal(t, uint64(1), p.Stats().SpawnFailures)
}

func TestRecoversWhenSpawnSucceedsAgain(t *testing.T) {
	sp := &spawner{mode: "exitnow"}
	p := pool.New(pool.Config{Name: "t", MinIdle: 1, MaxWorkers: 1, BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond}, sp.spawn)
	defer p.Close()
	require.Eventually(t, func() bool { return p.Stats().SpawnFailures >= 1 }, 10*time.Second, time.Millisecond)
	sp.mu.Lock()
	sp.mode = "raw" // the operator fixed the worker
	sp.mu.Unlock()
	require.Eventually(t, func() bool { return p.Stats().Idle == 1 }, 10*time.Second, time.Millisecond)
	l := acquire(t, p)
	l.Release(false)
	assert.Empty(t, p.Stats().LastError)
}

func TestWaiterGivingUpDoesNotCancelSpawn(t *testing.T) {
	p, _ := newPool(t, "slowready", pool.Config{MinIdle: 0, MaxWorkers: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := p.Acquire(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool { return p.Stats().Idle == 1 }, 10*time.Second, time.Millisecond)
}

func TestDrainRefusesNewCheckouts(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1})
	held := acquire(t, p)
	errc := make(chan error, 1)
	go func() {
		_, err := p.Acquire(context.Background())
		errc <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().Queued == 1 }, 10*time.Second, time.Millisecond)
	p.Drain(nil)
	require.ErrorIs(t, <-errc, pool.ErrShuttingDown)
	_, err := p.Acquire(context.Background())
	require.ErrorIs(t, err, pool.ErrShuttingDown)
	assert.Equal(t, 1, p.Busy())
	held.Release(false)
	assert.Equal(t, 0, p.Busy())
}

// TestLeaseWanted: a lease is wanted back while a checkout waits, while the pool drains,
// and when its worker is due to be retired at release (here: max_checkouts).
func TestLeaseWanted(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 1})
	held := acquire(t, p)
	assert.False(t, held.Wanted(), "nobody waits")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		l, err := p.Acquire(ctx)
		if err == nil {
			l.Release(false)
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return p.Stats().Queued == 1 }, 10*time.Second, time.Millisecond)
	assert.True(t, held.Wanted(), "a checkout waits")
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	assert.False(t, held.Wanted(), "the waiter gave up")
	p.Pause(errors.New("paused by hand"))
	assert.True(t, held.Wanted(), "the pool is paused (taskctl drain)")
	p.Resume()
	assert.False(t, held.Wanted(), "resumed")
	p.Drain(nil)
	assert.True(t, held.Wanted(), "the pool drains")
	held.Release(false)

	p2, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 2, MaxCheckouts: 1})
	l := acquire(t, p2)
	assert.True(t, l.Wanted(), "served max_checkouts: retired at release")
	l.Release(false)
}

// TestStress hammers one pool from many goroutines with random hold times, retirements,
// crashes and abandoned waits, checking the caps as it goes.
func TestStress(t *testing.T) {
	const maxWorkers = 4
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: maxWorkers, MaxCheckouts: 7,
		IdleTimeout: 50 * time.Millisecond, BackoffMin: time.Millisecond})
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for time.Now().Before(stop) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(50))*time.Millisecond)
				l, err := p.Acquire(ctx)
				cancel()
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("acquire: %v", err)
						return
					}
					continue
				}
				st := p.Stats()
				if st.Live-st.Retiring+st.Starting > maxWorkers { // retiring workers drain outside the cap
					t.Errorf("cap broken: %+v", st)
				}
				switch r.IntN(10) {
				case 0:
					l.Release(true)
				case 1:
					l.Worker().Kill(errors.New("stress"))
					l.Release(false)
				default:
					ch := make(chan worker.Reply, 1)
					if _, err := l.Worker().Call("echo", []byte(`["x"]`), func(rep worker.Reply) { ch <- rep.Clone() }); err == nil {
						if rep := <-ch; rep.Err != nil {
							t.Errorf("echo on a healthy checkout: %v", rep.Err)
						}
					}
					l.Release(false)
				}
			}
		}()
	}
	wg.Wait()
	require.Eventually(t, func() bool { st := p.Stats(); return st.Busy == 0 && st.Live <= maxWorkers }, 10*time.Second, time.Millisecond)
}

func TestWaitIdle(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 1, MaxWorkers: 2})
	require.NoError(t, p.WaitIdle(context.Background()), "nothing held")
	a, b := acquire(t, p), acquire(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.WaitIdle(ctx), context.DeadlineExceeded)
	done := make(chan error, 1)
	go func() { done <- p.WaitIdle(context.Background()) }()
	a.Release(false)
	assert.Equal(t, 1, p.Busy())
	b.Release(true)
	require.NoError(t, <-done, "returns once the last lease is released")
	assert.Zero(t, p.Busy())
}

// TestWorkerExitingRightAfterReadyIsNotCounted: a worker may exit before the pool has
// registered it. It must then count as a failed start, not stay behind as a live worker
// that fills max_workers and leaves checkouts waiting for ever.
func TestWorkerExitingRightAfterReadyIsNotCounted(t *testing.T) {
	p, sp := newPool(t, "readyexit", pool.Config{MinIdle: 0, MaxWorkers: 1,
		BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	sp.exitFirst = true // before the first spawn: the pool starts none until asked (MinIdle 0)
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := p.Acquire(ctx)
		cancel()
		if err == nil {
			l.Release(true)
			t.Fatal("a checkout got a worker that had exited")
		}
		require.ErrorIs(t, err, pool.ErrUnavailable, "a checkout is failed with the reason, not left waiting")
	}
	require.Eventually(t, func() bool { return p.Stats().Live == 0 }, 10*time.Second, 5*time.Millisecond,
		"no exited worker is left counted as live")
}

// TestLeaseSpare: a lease tells the pool's spare workers just after it was granted: idle
// workers, less the checkouts still waiting (negative when a queue waits).
func TestLeaseSpare(t *testing.T) {
	p, _ := newPool(t, "raw", pool.Config{MinIdle: 3, MaxWorkers: 3})
	require.Eventually(t, func() bool { return p.Stats().Idle == 3 }, 10*time.Second, time.Millisecond)
	a := acquire(t, p)
	assert.Equal(t, 2, a.Spare(), "two of three left idle")
	b := acquire(t, p)
	c := acquire(t, p)
	assert.Equal(t, 1, b.Spare())
	assert.Equal(t, 0, c.Spare(), "none idle, none waiting")
	got := make(chan *pool.Lease, 2)
	for range 2 {
		go func() {
			l, err := p.Acquire(context.Background())
			assert.NoError(t, err)
			got <- l
		}()
	}
	require.Eventually(t, func() bool { return p.Stats().Queued == 2 }, 10*time.Second, time.Millisecond)
	a.Release(false)
	first := <-got
	assert.Equal(t, -1, first.Spare(), "handed to the first waiter while one more waits")
	b.Release(false)
	second := <-got
	assert.Equal(t, 0, second.Spare())
	for _, l := range []*pool.Lease{c, first, second} {
		l.Release(false)
	}
}
