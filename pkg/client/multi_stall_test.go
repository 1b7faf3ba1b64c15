package client

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/wire"
)

// stopDaemon stops d's taskd process with SIGSTOP: it keeps its sockets and its
// connections, accepts new ones and takes requests into its socket buffers, and answers
// nothing. It is continued (SIGCONT) when the test ends, before anything else is cleaned
// up, so that no process is left stopped.
func stopDaemon(t *testing.T, d *taskdtest.Daemon) {
	t.Helper()
	require.NoError(t, d.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { d.Signal(syscall.SIGCONT) })
	// The signal is delivered asynchronously: wait until every thread has stopped.
	require.Eventually(t, func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", d.PID()))
		if err != nil {
			return false
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				return false
			}
			if st, err := procfs.ReadStat(tid); err == nil && st.State != 'T' {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "taskd did not stop")
}

// connectAll has c connect to every daemon of ds (a checkout granted by each, released).
func connectAll(t *testing.T, c *Client, ds []*taskdtest.Daemon) {
	t.Helper()
	need := make([]int, len(ds))
	for i := range need {
		need[i] = 1
	}
	for _, cos := range holdOn(t, c, ds, need) {
		for _, co := range cos {
			co.Release()
		}
	}
}

// busyWorkers returns the busy workers of interface echo in d's status.
func busyWorkers(t *testing.T, admin *Client) (int, error) {
	st, err := admin.DaemonStatus(context.Background())
	if err != nil {
		return 0, err
	}
	for _, is := range st.Interfaces {
		if is.Name == "echo" {
			return is.Busy, nil
		}
	}
	return 0, nil
}

// TestMultiStallCheckout: with one daemon of three stopped (SIGSTOP), checkouts that go
// to it are moved to the others once it fails to answer a ping: every checkout succeeds,
// well within its deadline, and the stopped daemon is counted as stalled and banned.
// Continued, it releases the late grants of the abandoned requests, and serves again.
func TestMultiStallCheckout(t *testing.T) {
	ds, _, c := startMulti(t, 3, Config{Timeout: 10 * time.Second})
	connectAll(t, c, ds)
	admin := newClient(t, Config{Addr: ds[0].Addr})
	served := c.Stats().Daemons[0].Checkouts
	stopDaemon(t, ds[0])

	// Whether the stopped daemon was ever seen banned while the checkouts ran.
	var banned atomic.Bool
	watching := make(chan struct{})
	var watcher sync.WaitGroup
	watcher.Go(func() {
		for {
			if c.Stats().Daemons[0].Banned {
				banned.Store(true)
			}
			select {
			case <-watching:
				return
			case <-time.After(time.Millisecond):
			}
		}
	})

	const goroutines, each = 6, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	moved := 0 // checkouts that waited for a probe: they went to the stopped daemon first
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				start := time.Now()
				co, err := c.Checkout(context.Background())
				took := time.Since(start)
				mu.Lock()
				slowest = max(slowest, took)
				if took >= probeAfter {
					moved++
				}
				mu.Unlock()
				if !assert.NoError(t, err, "checkout %d of goroutine %d", i, g) {
					return
				}
				var r []any
				assert.NoError(t, co.Call(context.Background(), "echo", &r, i))
				assert.NotEqual(t, 0, daemonOf(ds, co.Worker().PID), "a checkout granted by the stopped daemon")
				co.Release()
			}
		})
	}
	wg.Wait()
	close(watching)
	watcher.Wait()

	st := c.Stats().Daemons[0]
	t.Logf("slowest checkout %v; %d of %d waited for a probe; daemon 0: %+v", slowest, moved, goroutines*each, st)
	assert.Less(t, slowest, 6*time.Second, "a checkout waited for its deadline on the stopped daemon")
	assert.NotZero(t, moved, "no checkout went to the stopped daemon first")
	assert.NotZero(t, st.Stalls, "the stopped daemon's stalls")
	assert.NotZero(t, st.Errors, "the checkouts abandoned on the stopped daemon")
	assert.True(t, banned.Load(), "the stopped daemon was never banned")
	assert.Equal(t, served, st.Checkouts, "checkouts granted by the stopped daemon")

	// Continued: it reads the abandoned requests and their abandons, and releases the
	// workers it grants them.
	require.NoError(t, ds[0].Signal(syscall.SIGCONT))
	require.Eventually(t, func() bool {
		busy, err := busyWorkers(t, admin)
		return err == nil && busy == 0
	}, 10*time.Second, 10*time.Millisecond, "the stopped daemon's late grants are released")
	require.Eventually(t, func() bool {
		co, err := c.Checkout(context.Background())
		if !assert.NoError(t, err, "checkout after SIGCONT") {
			return true
		}
		co.Release()
		return c.Stats().Daemons[0].Checkouts > served
	}, 20*time.Second, 10*time.Millisecond, "the continued daemon is used again")
}

// TestMultiStallBusy: a daemon that is only busy (every worker held by another client,
// so that a checkout waits in its queue) answers the probe's ping: it is not banned, and
// the checkout waiting there is served when a worker frees up, long after probeAfter.
func TestMultiStallBusy(t *testing.T) {
	ds, _, c := startMulti(t, 2, Config{Timeout: 20 * time.Second})
	connectAll(t, c, ds)
	var held []*Checkout
	for _, d := range ds {
		other := newClient(t, Config{Addr: d.Addr})
		for range 4 { // max_workers
			co, err := other.Checkout(context.Background())
			require.NoError(t, err)
			held = append(held, co)
		}
	}
	type outcome struct {
		co   *Checkout
		err  error
		took time.Duration
	}
	got := make(chan outcome, 1)
	go func() {
		start := time.Now()
		co, err := c.Checkout(context.Background())
		got <- outcome{co, err, time.Since(start)}
	}()
	// Both daemons answer the pings of a probe: at least two rounds of it.
	pongs := func() int {
		n := 0
		for _, d := range c.multi.daemons {
			d.pr.mu.Lock()
			if !d.pr.aliveAt.IsZero() {
				n++
			}
			d.pr.mu.Unlock()
		}
		return n
	}
	require.Eventually(t, func() bool { return pongs() > 0 }, 10*time.Second, 10*time.Millisecond, "no probe answered")
	time.Sleep(2 * probeAfter) // more probes, each answered
	for _, co := range held {
		co.Release()
	}
	o := <-got
	require.NoError(t, o.err)
	o.co.Release()
	assert.Greater(t, o.took, 2*probeAfter)
	for i, row := range c.Stats().Daemons {
		assert.Zero(t, row.Stalls, "daemon %d", i)
		assert.Zero(t, row.Errors, "daemon %d", i)
		assert.False(t, row.Banned, "daemon %d", i)
	}
}

// TestMultiStallCall: a one-shot call sent to a stopped daemon is not moved to another
// daemon, though one is up (its effect is unknown: it may run once the daemon goes on):
// it fails at its deadline, saying that the daemon did not answer a ping. The pick is
// forced by banning the other daemon (for an hour) before the call.
func TestMultiStallCall(t *testing.T) {
	ds, _, c := startMulti(t, 2, Config{})
	connectAll(t, c, ds)
	other := newClient(t, Config{Addr: ds[1].Addr})
	before, err := other.DaemonStatus(context.Background())
	require.NoError(t, err)
	served := c.Stats().Daemons[1].Checkouts
	c.multi.mu.Lock()
	c.multi.daemons[1].banUntil = time.Now().Add(time.Hour)
	c.multi.mu.Unlock()
	stopDaemon(t, ds[0])

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	var r []any
	err = c.Call(ctx, "echo", &r, "once")
	took := time.Since(start)
	t.Logf("after %v: %v", took, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "did not answer a ping")
	assert.ErrorContains(t, err, ds[0].Addr)
	assert.Greater(t, took, 2900*time.Millisecond, "returned before its deadline: %v", err)
	st := c.Stats().Daemons
	assert.NotZero(t, st[0].Stalls)
	assert.Equal(t, served, st[1].Checkouts, "the call was moved")

	after, err := other.DaemonStatus(context.Background())
	require.NoError(t, err)
	require.Len(t, after.Interfaces, 1)
	assert.Equal(t, before.Interfaces[0].Calls, after.Interfaces[0].Calls, "the other daemon ran a call")
	assert.Equal(t, before.Interfaces[0].Checkouts, after.Interfaces[0].Checkouts, "the other daemon took a checkout")
}

// TestMultiStallStress: many checkouts and one-shot calls on three fake daemons that answer
// requests and pings after random delays, with probeAfter and probeTimeout short enough
// that probes are made, shared, answered, missed and abandoned all the time. Every request
// succeeds (a one-shot call waits for its late answer; a checkout may move), some stalls
// are seen, and every grant, late ones included, is released in the end. Under -race,
// and with goleak in TestMain, it checks the probe's locking and goroutines.
func TestMultiStallStress(t *testing.T) {
	var mu sync.Mutex
	granted := map[*fakeDaemon]map[uint64]bool{} // grants not yet released, by daemon; guarded by mu
	var timers sync.WaitGroup                    // the fakes' delayed answers
	quiet := false                               // no more delayed answers; guarded by mu
	onceSent := 0                                // one-shot requests the fakes received; guarded by mu
	later := func(max time.Duration, f func()) {
		mu.Lock()
		defer mu.Unlock()
		if !quiet {
			timers.Add(1)
			time.AfterFunc(rand.N(max), func() { defer timers.Done(); f() })
		}
	}
	quiesce := func() { // waits for the delayed answers, and schedules no more
		mu.Lock()
		quiet = true
		mu.Unlock()
		timers.Wait()
	}
	var addrs []string
	for range 3 {
		d := newFakeDaemon(t)
		granted[d] = map[uint64]bool{}
		t.Cleanup(quiesce) // before the fake stops (cleanups run last-in first-out)
		d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
			switch m.T {
			case wire.TCheckout:
				m.A = append(json.RawMessage(nil), m.A...) // m aliases the reader's buffer
				if m.Once {
					mu.Lock()
					onceSent++
					mu.Unlock()
				}
				later(60*time.Millisecond, func() {
					if m.Once {
						d.grant(fc, m) // answered
						return
					}
					d.mu.Lock()
					d.nextCo++
					co := d.nextCo
					d.mu.Unlock()
					mu.Lock()
					granted[d][co] = true // before the client can release it
					mu.Unlock()
					fc.send(wire.ClientMsg{T: wire.TGranted, ID: m.ID, Co: co, Worker: "echo-1", PID: 1001, N: 1})
				})
			case wire.TPing:
				later(20*time.Millisecond, func() { d.dflt(fc, m) })
			case wire.TRelease:
				mu.Lock()
				delete(granted[d], m.Co)
				mu.Unlock()
			default:
				return false
			}
			return true
		})
		addrs = append(addrs, d.addr())
	}
	c, err := New(Config{Interface: "echo", Addrs: addrs, Timeout: 10 * time.Second})
	require.NoError(t, err)
	c.multi.probeAfter, c.multi.probeTimeout = 10*time.Millisecond, 10*time.Millisecond

	var wg sync.WaitGroup
	calls := 0
	for g := range 8 {
		for i := range 25 {
			if (g+i)%2 == 0 {
				calls++
			}
		}
		wg.Go(func() {
			for i := range 25 {
				if (g+i)%2 == 0 {
					var r []any
					assert.NoError(t, c.Call(context.Background(), "echo", &r, i), "call %d of goroutine %d", i, g)
					continue
				}
				co, err := c.Checkout(context.Background())
				if assert.NoError(t, err, "checkout %d of goroutine %d", i, g) {
					co.Release()
				}
			}
		})
	}
	wg.Wait()
	var stalls int64
	for _, row := range c.Stats().Daemons {
		stalls += row.Stalls
	}
	t.Logf("stalls: %d", stalls)
	assert.NotZero(t, stalls)
	quiesce() // every request that reached a fake is answered, late or not
	mu.Lock()
	assert.Equal(t, calls, onceSent, "one-shot calls sent, each once: none moved to another daemon")
	mu.Unlock()
	defer c.Close()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, cos := range granted {
			if len(cos) > 0 {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond, "grants never released")
}
