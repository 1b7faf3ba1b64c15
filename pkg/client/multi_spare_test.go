package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// startSized starts a daemon per size, each with interface "echo" of the lease worker
// holding that many workers (min_idle = max_workers, so all are warm), and returns them
// with their addresses.
func startSized(t testing.TB, sizes ...int) ([]*taskdtest.Daemon, []string) {
	t.Helper()
	lw := taskdtest.Binary(t, "internal/taskdtest/leaseworker")
	var ds []*taskdtest.Daemon
	var addrs []string
	for _, n := range sizes {
		yaml := fmt.Sprintf("interfaces:\n  echo:\n    command: [%q]\n    min_idle: %d\n    max_workers: %d\n", lw, n, n)
		d := taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: multiDir(t), Wait: true})
		addrs = append(addrs, d.Addr)
		ds = append(ds, d)
	}
	return ds, addrs
}

// spreadLoad runs goroutines×each checkouts on c, each holding its worker for one call
// of "sleep" hold milliseconds long, and returns how many each daemon served (by where
// its worker runs) and the mean wait for a checkout.
func spreadLoad(t testing.TB, c *Client, ds []*taskdtest.Daemon, goroutines, each, hold int) ([]int, time.Duration) {
	ctx := context.Background()
	before := c.Stats()
	var mu sync.Mutex
	per := make([]int, len(ds))
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() {
			for range each {
				co, err := c.Checkout(ctx)
				if err != nil {
					errs <- err
					return
				}
				var ms int
				err = co.Call(ctx, "sleep", &ms, hold)
				i := daemonOf(ds, co.Worker().PID)
				co.Release()
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if i >= 0 {
					per[i]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	after := c.Stats()
	n := after.WaitCount - before.WaitCount
	return per, (after.WaitDuration - before.WaitDuration) / time.Duration(max(n, 1))
}

// neighbourHolds checks out n workers of the daemon at addr with a Client of its own (another
// application sharing the daemon) and holds them until the test ends.
func neighbourHolds(t testing.TB, addr string, n int) {
	t.Helper()
	other, err := New(Config{Addr: addr, Interface: "echo"})
	require.NoError(t, err)
	t.Cleanup(func() { other.Close() })
	for range n {
		co, err := other.Checkout(context.Background())
		require.NoError(t, err)
		t.Cleanup(co.Release)
	}
}

// TestMultiWeighsSpare: a Client of several daemons sends more checkouts where the
// daemons say more workers are spare, which its own outstanding counts cannot see: a
// bigger pool, or one whose workers another application holds.
func TestMultiWeighsSpare(t *testing.T) {
	t.Run("sizes", func(t *testing.T) {
		// 1, 2 and 6 workers; 9 callers, one per worker in all. Spread evenly, the
		// daemon of 1 worker would get a third of the checkouts and queue them.
		ds, addrs := startSized(t, 1, 2, 6)
		c := newClient(t, Config{Addrs: addrs})
		per, wait := spreadLoad(t, c, ds, 9, 30, 5)
		t.Logf("served per daemon (1, 2, 6 workers): %v; mean wait %v", per, wait)
		assert.Greater(t, per[2], 2*per[0], "the daemon of 6 workers serves more than twice as many as the daemon of 1: %v", per)
		assert.Greater(t, per[2], per[1], "the daemon of 6 workers serves more than the daemon of 2: %v", per)
	})
	t.Run("neighbour", func(t *testing.T) {
		// Three daemons of 4 workers; another application holds 3 of daemon 0's. With 6
		// callers and 9 workers free, none need wait: daemon 0 should never have two of
		// this Client's checkouts (one of them waiting for its only free worker).
		ds, addrs := startSized(t, 4, 4, 4)
		neighbourHolds(t, addrs[0], 3)
		c := newClient(t, Config{Addrs: addrs})
		stop := make(chan struct{})
		var samples, queued int
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
				samples++
				if c.Stats().Daemons[0].Outstanding > 1 {
					queued++
				}
			}
		})
		per, wait := spreadLoad(t, c, ds, 6, 40, 5)
		close(stop)
		wg.Wait()
		t.Logf("served per daemon (1, 4, 4 workers free): %v; mean wait %v; two outstanding on daemon 0 in %d of %d samples", per, wait, queued, samples)
		assert.Less(t, queued*4, samples, "daemon 0 had a checkout waiting in %d of %d samples", queued, samples)
		st := c.Stats()
		require.Len(t, st.Daemons, 3)
		assert.Greater(t, st.Daemons[1].Spare, st.Daemons[0].Spare, "daemon 1 has more workers to spare than daemon 0: %+v", st.Daemons)
	})
}

// BenchmarkMultiSkew measures how a Client of several daemons spreads checkouts over
// daemons of unequal spare workers (daemons of 1, 2 and 6 workers, 9 callers holding
// each checkout for a 20 ms call), by where it learns their spare workers:
//
//   - outstanding: nowhere; the power of two choices on its own outstanding checkouts;
//   - replies: the spare count on grants (the default);
//   - status-100ms, status-1s: a status request to each daemon on a timer instead.
//
// It reports the mean wait for a checkout (wait-µs), the share of the checkouts the
// daemon of 1 worker served (small-%: 11 is its share of the workers) and, for the
// timers, the status requests made per checkout (status/op).
func BenchmarkMultiSkew(b *testing.B) {
	ds, addrs := startSized(b, 1, 2, 6)
	for _, mode := range []struct {
		name  string
		note  bool
		weigh bool
		poll  time.Duration
	}{
		{"outstanding", false, false, 0},
		{"replies", true, true, 0},
		{"status-100ms", false, true, 100 * time.Millisecond},
		{"status-1s", false, true, time.Second},
	} {
		b.Run(mode.name, func(b *testing.B) {
			noteSpares, weighSpares = mode.note, mode.weigh
			defer func() { noteSpares, weighSpares = true, true }()
			c, err := New(Config{Addrs: addrs, Interface: "echo"})
			require.NoError(b, err)
			defer c.Close()
			var polls int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if mode.poll > 0 {
				wg.Go(func() { polls = pollSpares(b, c, mode.poll, stop) })
			}
			per := make([]int, len(ds))
			var wait time.Duration
			b.ResetTimer()
			for range b.N {
				p, w := spreadLoad(b, c, ds, 9, 10, 20)
				for i := range p {
					per[i] += p[i]
				}
				wait += w
			}
			b.StopTimer()
			close(stop)
			wg.Wait()
			total := per[0] + per[1] + per[2]
			b.ReportMetric(float64(wait.Microseconds())/float64(b.N), "wait-µs")
			b.ReportMetric(100*float64(per[0])/float64(max(total, 1)), "small-%")
			if mode.poll > 0 {
				b.ReportMetric(float64(polls)/float64(max(total, 1)), "status/op")
			}
		})
	}
}

// pollSpares sets each daemon's spare count of c from a status request every interval,
// until stop, and returns how many status requests it made.
func pollSpares(b *testing.B, c *Client, every time.Duration, stop <-chan struct{}) int64 {
	var n int64
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		c.multi.mu.Lock()
		ds := slices.Clone(c.multi.daemons)
		c.multi.mu.Unlock()
		for _, d := range ds {
			st, err := d.c.DaemonStatus(context.Background())
			n++
			if err != nil {
				b.Error(err)
				continue
			}
			for _, is := range st.Interfaces {
				if is.Name == "echo" {
					sp := &d.c.spare
					sp.n.Store(int64(is.Idle - is.Queued))
					sp.out.Store(int64(d.c.outstanding()))
					sp.at.Store(time.Now().UnixNano())
				}
			}
		}
		select {
		case <-stop:
			return n
		case <-t.C:
		}
	}
}
