package server_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// TestRecyclingNeverDipsCapacity: a pool at max_workers that retires every worker after
// one checkout keeps its capacity, because each replacement is started before the retiring
// worker is stopped. Live (in status: started and not yet reaped, not counting workers
// still starting) never drops below max_workers, and non-retiring workers never exceed it.
func TestRecyclingNeverDipsCapacity(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 4\nmax_workers: 4\nmax_checkouts: 1"))
	c := newClient(t, d, "echo", func(c *client.Config) { c.MaxWorkers = 8 })
	admin := newClient(t, d, "echo")
	require.Eventually(t, func() bool { return status(t, admin, "echo").Idle == 4 }, 20*time.Second, 5*time.Millisecond)

	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(2 * time.Second)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				calls.Add(1)
				if err := c.Call(ctxT(t), "echo", nil, "x"); err != nil {
					failed.Add(1)
					t.Errorf("call: %v", err)
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	pids := map[int]bool{}
	samples := 0
	for sampling := true; sampling; {
		select {
		case <-done:
			sampling = false
		default:
		}
		is := status(t, admin, "echo")
		samples++
		if is.Live < 4 {
			t.Errorf("status shows %d live workers (want ≥ 4): %+v", is.Live, is)
		}
		if is.Live-is.Retiring > 4 {
			t.Errorf("%d workers serve or wait at max_workers 4: %+v", is.Live-is.Retiring, is)
		}
		for _, w := range is.Workers {
			pids[w.PID] = true
		}
	}
	assert.Zero(t, failed.Load())
	t.Logf("%d calls, %d status samples, %d workers seen", calls.Load(), samples, len(pids))
	is := status(t, admin, "echo")
	assert.GreaterOrEqual(t, is.Exits[client.ExitMaxCheckouts], uint64(calls.Load()-8), "every worker but the last few was recycled")

	for _, p := range d.Workers() {
		pids[p] = true
	}
	require.NoError(t, d.Stop(30*time.Second))
	var all []int
	for p := range pids {
		all = append(all, p)
	}
	taskdtest.RequireGone(t, all, 5*time.Second)
}

// TestExitReasonsInStatus: each way a worker ends is counted under its reason.
func TestExitReasonsInStatus(t *testing.T) {
	d := taskdtest.Start(t, "max_message_bytes: 64KiB\ninterfaces:\n"+
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1\ncall_timeout: 300ms\ncancel_grace: 200ms"))
	c := newClient(t, d, "echo")
	want := map[string]uint64{}
	check := func(method string, reason string, args ...any) {
		t.Helper()
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		_ = co.Call(ctxT(t), method, nil, args...)
		co.Release()
		want[reason]++
		require.Eventually(t, func() bool {
			got := status(t, c, "echo").Exits
			return assert.ObjectsAreEqual(want, got)
		}, 20*time.Second, 5*time.Millisecond, "after %s: want %v, have %v", method, want, status(t, c, "echo").Exits)
	}
	check("bye", client.ExitBye)
	check("crash", client.ExitCrashed)
	check("spin", client.ExitCallTimeout)
	check("longline", client.ExitProtocolError, 100_000)
	check("fail", client.ExitReleased)

	// An abort with nothing running retires the worker; one whose call ignores the cancel
	// kills it after cancel_grace.
	abort := func(method, reason string) {
		t.Helper()
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		if method != "" {
			co.Go(method)
			require.Eventually(t, func() bool { return status(t, c, "echo").Workers[0].Method == method },
				5*time.Second, time.Millisecond)
		}
		co.Abort(errors.New("given up"))
		co.Release()
		want[reason]++
		require.Eventually(t, func() bool { return assert.ObjectsAreEqual(want, status(t, c, "echo").Exits) },
			20*time.Second, 5*time.Millisecond, "after an abort during %q: want %v, have %v", method, want, status(t, c, "echo").Exits)
	}
	abort("", client.ExitReleased)
	abort("spin", client.ExitKilled)
}

// The names taskd reports are the ones pkg/client documents.
func TestExitReasonNamesMatchClient(t *testing.T) {
	documented := []string{client.ExitMaxCheckouts, client.ExitMaxAge, client.ExitMaxRSS, client.ExitBye, client.ExitIdleTimeout, client.ExitReleased,
		client.ExitCallTimeout, client.ExitProtocolError, client.ExitKilled, client.ExitCrashed, client.ExitShutdown, client.ExitReload,
		client.ExitAdmin}
	var names []string
	for r := range pool.NumExitReasons {
		names = append(names, r.String())
	}
	assert.ElementsMatch(t, documented, names)
}

// TestMaxAgeFromConfig: max_age and recycle_jitter reach the pool, and its recycling
// shows in status.
func TestMaxAgeFromConfig(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 2\nmax_workers: 2\nmax_age: 300ms\nrecycle_jitter: 20%"))
	c := newClient(t, d, "echo")
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits[client.ExitMaxAge] >= 2 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, c.Call(ctxT(t), "echo", nil), "calls go on while workers are recycled")
}

// TestMaxRSSCountsTheProcessTree: a worker whose child holds the memory is over max_rss.
func TestMaxRSSCountsTheProcessTree(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1\nmax_rss: 100MiB"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	require.NoError(t, co.Call(ctxT(t), "childalloc", nil, 150))
	co.Release()
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits[client.ExitMaxRSS] == 1 }, 20*time.Second, 10*time.Millisecond)
	taskdtest.RequireGone(t, []int{p}, 5*time.Second)
}
