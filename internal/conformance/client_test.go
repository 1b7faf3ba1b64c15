package conformance_test

// The behaviours of pkg/client that issue 3 asks for, one named test each, proven against
// a real taskd and every worker implementation (forEach). Only the base method contract
// (doc.go) is used, so every implementation must pass every assertion.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// checkout gets a checkout of c and releases it at the end of the test.
func checkout(t *testing.T, c *client.Client) *client.Checkout {
	t.Helper()
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	t.Cleanup(co.Release)
	return co
}

// pidOf asks the checkout's worker for its pid, and checks it against what taskd said.
func pidOf(t *testing.T, co *client.Checkout) int {
	t.Helper()
	var p int
	require.NoError(t, co.Call(ctxT(t), "pid", &p))
	require.Equal(t, co.Worker().PID, p, "the pid taskd reports is the worker's")
	return p
}

// ctxFor returns a context that ends after d.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// workerMethod returns the method the worker with pid is running, as taskd reports it.
func workerMethod(t *testing.T, c *client.Client, pid int) string {
	st, err := c.DaemonStatus(ctxT(t))
	require.NoError(t, err)
	for _, is := range st.Interfaces {
		for _, w := range is.Workers {
			if w.PID == pid {
				return w.Method
			}
		}
	}
	return ""
}

// requireStuck checks that a checkout's fatal error is sticky and immediate: a later call
// (and a pipelined one) returns the same error at once, even with a context that is
// already cancelled, which proves the answer did not need taskd.
func requireStuck(t *testing.T, co *client.Checkout, first error, is ...error) {
	t.Helper()
	ctx := ctxFor(t, 5*time.Second)
	begin := time.Now()
	var r []any
	err := co.Call(ctx, "echo", &r, "after")
	took := time.Since(begin)
	require.Error(t, err)
	assert.Equal(t, first.Error(), err.Error(), "the same error")
	for _, target := range is {
		assert.ErrorIs(t, err, target)
	}
	assert.Nil(t, r, "no result after a fatal error")
	assert.NoError(t, ctx.Err(), "returned before its own deadline")
	assert.Less(t, took, time.Second, "returns at once")

	done, cancel := context.WithCancel(context.Background())
	cancel()
	err = co.Call(done, "echo", nil)
	assert.Equal(t, first.Error(), err.Error(), "the sticky error wins over a cancelled context: no round trip was needed")
	err = co.Go("echo").Wait(ctx, nil)
	assert.Equal(t, first.Error(), err.Error(), "pipelined calls too")
}

// 1.
func TestRoundTrip(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1")
		c := newClient(t, d)
		co := checkout(t, c)
		ctx := ctxT(t)

		type doc = map[string]any
		nested := doc{
			"𝄞 clef":  []any{"😀 grinning", "🀄", doc{"深い 𐍈": []any{[]any{}, doc{}, nil, true, false}}},
			"plain":   "ascii",
			"escapes": "quote \" backslash \\ newline \n tab \t nul \x00",
			"float":   1.5,
		}
		var got []doc
		require.NoError(t, co.Call(ctx, "echo", &got, nested), "method call")
		require.Len(t, got, 1)
		assert.Equal(t, nested, got[0])

		var mixed []any
		require.NoError(t, co.Call(ctx, "echo", &mixed, "a", 2, []int{3}))
		assert.Equal(t, []any{"a", 2.0, []any{3.0}}, mixed, "encoding/json's rules: numbers in an interface{} are float64")

		var fn []string
		require.NoError(t, co.Call(ctx, "", &fn, "function-style", "𝄞"), "function-style call")
		assert.Equal(t, []string{"function-style", "𝄞"}, fn)

		var none []any
		require.NoError(t, co.Call(ctx, "echo", &none))
		assert.Empty(t, none, "no args, no results")

		big := []int64{1<<53 + 1, math.MaxInt64, math.MinInt64, -(1<<53 + 3)}
		var bigGot []int64
		require.NoError(t, co.Call(ctx, "echo", &bigGot, big[0], big[1], big[2], big[3]))
		assert.Equal(t, big, bigGot, "int64 above 2^53 stays exact")
		var one []uint64
		require.NoError(t, co.Call(ctx, "echo", &one, uint64(math.MaxUint64)))
		assert.Equal(t, []uint64{math.MaxUint64}, one)

		var exact []json.Number
		require.NoError(t, co.Call(ctx, "echo", &exact, uint64(1)<<63+1))
		assert.Equal(t, []json.Number{"9223372036854775809"}, exact, "json.Number keeps every digit")

		var raw json.RawMessage
		require.NoError(t, co.Call(ctx, "echo", &raw, 9007199254740993))
		assert.JSONEq(t, `[9007199254740993]`, string(raw), "*json.RawMessage keeps the raw result")
		require.Contains(t, string(raw), "9007199254740993")
		require.NoError(t, co.Call(ctx, "echo", nil, "discarded"), "a nil result discards it")

		var ms int
		require.NoError(t, co.Call(ctx, "sleep", &ms, 1))
		assert.Equal(t, 1, ms, "a scalar result")
		var s []string
		require.NoError(t, c.Call(ctx, "echo", &s, "one-shot"), "one-shot call")
		assert.Equal(t, []string{"one-shot"}, s)
	})
}

// 2.
func TestRemoteErrorFields(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1")
		c := newClient(t, d)
		co := checkout(t, c)
		err := co.Call(ctxT(t), "fail", nil, "the disk is full 💾")
		var re *client.RemoteError
		require.ErrorAs(t, err, &re)
		assert.Contains(t, re.Message, "the disk is full 💾")
		assert.NotEmpty(t, re.Type, "type")
		assert.NotEmpty(t, re.Trace, "trace")
		assert.Equal(t, "w", re.Interface)
		assert.Equal(t, "fail", re.Method)
		assert.Contains(t, err.Error(), "w.fail", "the text names interface and method")
		assert.Contains(t, err.Error(), re.Type)
		assert.Contains(t, err.Error(), "the disk is full 💾")
		assert.NotErrorIs(t, err, client.ErrWorkerLost)
		assert.NotErrorIs(t, err, client.ErrAborted)

		// One-shot calls report the same.
		err = c.Call(ctxT(t), "fail", nil, "again")
		require.ErrorAs(t, err, &re)
		assert.Contains(t, re.Message, "again")
	})
}

// 3.
func TestAfterRemoteErrorQueuedCallsAbort(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1\nmax_workers: 1")
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("KeepWorkerAfterError=%v", keep), func(t *testing.T) {
				c := newClient(t, d, func(cfg *client.Config) { cfg.KeepWorkerAfterError = keep })
				ctx := ctxT(t)
				co, err := c.Checkout(ctx)
				require.NoError(t, err)
				a := pidOf(t, co)

				// The sleep keeps the worker busy while the rest queue up in taskd behind it.
				slow := co.Go("sleep", 200)
				failing := co.Go("fail", "first error")
				var queued []*client.Pending
				for i := range 5 {
					queued = append(queued, co.Go("echo", i))
				}
				var ms int
				require.NoError(t, slow.Wait(ctx, &ms))
				assert.Equal(t, 200, ms)
				var re *client.RemoteError
				require.ErrorAs(t, failing.Wait(ctx, nil), &re)
				assert.Contains(t, re.Message, "first error")
				for i, p := range queued {
					var r []int
					err := p.Wait(ctx, &r)
					require.ErrorIs(t, err, client.ErrAborted, "queued call %d", i)
					assert.NotErrorAs(t, err, &re, "queued call %d: not the remote error itself", i)
					assert.Nil(t, r, "queued call %d: never a result", i)
					assert.Contains(t, err.Error(), "still usable")
				}

				// The checkout stays usable, on the same worker.
				var got []string
				require.NoError(t, co.Call(ctx, "echo", &got, "after the error"))
				assert.Equal(t, []string{"after the error"}, got)
				assert.Equal(t, a, pidOf(t, co))
				co.Release()

				co2 := checkout(t, c)
				if keep {
					assert.Equal(t, a, pidOf(t, co2), "KeepWorkerAfterError: the same worker serves the next checkout")
				} else {
					assert.NotEqual(t, a, pidOf(t, co2), "the worker that raised was retired on release")
					taskdtest.RequireGone(t, []int{a}, 5*time.Second)
				}
				co2.Release()
			})
		}
	})
}

// 4.
func TestFatalErrorsAreSticky(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		c := newClient(t, start(t, im, "min_idle: 1"))

		t.Run("call_timeout", func(t *testing.T) {
			c := newClient(t, start(t, im, "min_idle: 1\ncall_timeout: 300ms"))
			co := checkout(t, c)
			p := pidOf(t, co)
			err := co.Call(ctxT(t), "spin", nil)
			require.ErrorIs(t, err, client.ErrCallTimeout)
			require.ErrorIs(t, err, client.ErrWorkerLost)
			assert.Contains(t, err.Error(), "call_timeout")
			requireStuck(t, co, err, client.ErrCallTimeout, client.ErrWorkerLost)
			taskdtest.RequireGone(t, []int{p}, 5*time.Second)
		})

		t.Run("worker killed", func(t *testing.T) {
			co := checkout(t, c)
			p := pidOf(t, co)
			call := co.Go("sleep", 10_000)
			require.Eventually(t, func() bool { return workerMethod(t, c, p) == "sleep" }, 10*time.Second, 5*time.Millisecond)
			require.NoError(t, syscall.Kill(p, syscall.SIGKILL))
			err := call.Wait(ctxT(t), nil)
			require.ErrorIs(t, err, client.ErrWorkerLost)
			assert.NotErrorIs(t, err, client.ErrCallTimeout)
			requireStuck(t, co, err, client.ErrWorkerLost)
			taskdtest.RequireGone(t, []int{p}, 5*time.Second)
		})

		t.Run("caller deadline", func(t *testing.T) {
			co := checkout(t, c)
			p := pidOf(t, co)
			begin := time.Now()
			err := co.Call(ctxFor(t, 100*time.Millisecond), "sleep", nil, 10_000)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, time.Since(begin), 5*time.Second)
			requireStuck(t, co, err, context.DeadlineExceeded)
			taskdtest.RequireGone(t, []int{p}, 5*time.Second)
		})

		t.Run("Abort", func(t *testing.T) {
			co := checkout(t, c)
			p := pidOf(t, co)
			cause := errors.New("the request was cancelled upstream")
			co.Abort(cause)
			err := co.Call(ctxT(t), "echo", nil)
			require.ErrorIs(t, err, client.ErrAborted)
			require.ErrorIs(t, err, cause)
			requireStuck(t, co, err, client.ErrAborted, cause)
			co.Abort(errors.New("a second abort changes nothing"))
			requireStuck(t, co, err, client.ErrAborted, cause)
			taskdtest.RequireGone(t, []int{p}, 5*time.Second)
		})

		// The interface carries on with new workers.
		require.NoError(t, c.Call(ctxT(t), "echo", nil))
	})
}

// 5.
func TestAbortDuringCall(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1\nmax_workers: 1")
		c := newClient(t, d)
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		p := pidOf(t, co)

		type res struct {
			err error
			ms  int
		}
		done := make(chan res, 1)
		go func() {
			var ms int
			err := co.Call(ctxT(t), "sleep", &ms, 5000)
			done <- res{err, ms}
		}()
		queued := co.Go("echo", "queued behind the sleep")
		require.Eventually(t, func() bool { return workerMethod(t, c, p) == "sleep" }, 10*time.Second, 5*time.Millisecond)

		cause := errors.New("user pressed stop")
		begin := time.Now()
		co.Abort(cause)
		r := <-done
		took := time.Since(begin)
		t.Logf("the running call returned %v after Abort", took)
		require.ErrorIs(t, r.err, client.ErrAborted)
		require.ErrorIs(t, r.err, cause)
		assert.Zero(t, r.ms, "no result")
		assert.Less(t, took, 2*time.Second, "at once, not when the 5s sleep ends")
		require.ErrorIs(t, queued.Wait(ctxT(t), nil), client.ErrAborted)

		taskdtest.RequireGone(t, []int{p}, 5*time.Second)
		// The worker is gone, so nothing can answer any more: still no success.
		var ms int
		require.ErrorIs(t, co.Call(ctxT(t), "sleep", &ms, 1), client.ErrAborted)
		require.ErrorIs(t, queued.Wait(ctxT(t), nil), client.ErrAborted)
		assert.Zero(t, ms)

		// The pool slot (max_workers: 1) is free again, while the aborted checkout is
		// not even released yet.
		begin = time.Now()
		co2, err := c.Checkout(ctxFor(t, 20*time.Second))
		require.NoError(t, err)
		t.Logf("next checkout granted %v after the worker was gone", time.Since(begin))
		assert.NotEqual(t, p, pidOf(t, co2))
		co2.Release()
		co.Release()
	})
}

// 6.
func TestDeadlines(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 2\nmax_workers: 4")
		c := newClient(t, d)

		t.Run("pipelined calls each with their own context", func(t *testing.T) {
			co := checkout(t, c)
			a := co.Go("sleep", 300)
			b := co.Go("echo", "b")
			var ms int
			require.NoError(t, a.Wait(ctxFor(t, 20*time.Second), &ms), "a long deadline")
			assert.Equal(t, 300, ms)
			var got []string
			require.NoError(t, b.Wait(ctxFor(t, 10*time.Second), &got))
			assert.Equal(t, []string{"b"}, got)

			p := pidOf(t, co)
			slow := co.Go("sleep", 10_000)
			after := co.Go("echo", "after")
			err := slow.Wait(ctxFor(t, 200*time.Millisecond), nil)
			require.ErrorIs(t, err, context.DeadlineExceeded, "the short deadline of this Wait")
			err2 := after.Wait(ctxFor(t, 20*time.Second), &got)
			require.Equal(t, err.Error(), err2.Error(), "the call behind it shares the fatal error, never a result")
			taskdtest.RequireGone(t, []int{p}, 5*time.Second)
		})

		t.Run("a call from inside a goroutine holding a checkout", func(t *testing.T) {
			outer := checkout(t, c)
			errs := make(chan error, 4)
			go func() {
				// This goroutine holds outer with a call in flight, and makes calls of its own
				// elsewhere: each obeys its own context.
				inFlight := outer.Go("sleep", 500)
				ctx := ctxFor(t, 20*time.Second)
				errs <- c.Call(ctx, "echo", nil, "nested one-shot")
				inner, err := c.Checkout(ctx)
				if err != nil {
					errs <- err
					return
				}
				defer inner.Release()
				errs <- inner.Call(ctxFor(t, 200*time.Millisecond), "sleep", nil, 10_000)
				var ms int
				errs <- inFlight.Wait(ctx, &ms)
			}()
			require.NoError(t, <-errs, "nested one-shot call")
			require.ErrorIs(t, <-errs, context.DeadlineExceeded, "the inner call's own short deadline")
			require.NoError(t, <-errs, "the outer call was not affected by the inner deadline")
			require.NoError(t, outer.Call(ctxT(t), "echo", nil), "and the outer checkout is still usable")
		})

		t.Run("a short deadline on spin kills the worker", func(t *testing.T) {
			co := checkout(t, c)
			p := pidOf(t, co)
			err := co.Call(ctxFor(t, 300*time.Millisecond), "spin", nil)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Contains(t, err.Error(), "killed")
			// Its CPU stops burning: the process is gone.
			taskdtest.RequireGone(t, []int{p}, 5*time.Second)
		})

		t.Run("Config.Timeout applies when ctx has none", func(t *testing.T) {
			short := newClient(t, d, func(cfg *client.Config) { cfg.Timeout = 300 * time.Millisecond })
			co, err := short.Checkout(context.Background())
			require.NoError(t, err)
			defer co.Release()
			p := pidOf(t, co)
			err = co.Call(context.Background(), "sleep", nil, 10_000)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			taskdtest.RequireGone(t, []int{p}, 5*time.Second)

			// A one-shot call too (the client abandons the request while its call runs,
			// and taskd kills the worker). The pid call has a deadline of its own: the
			// worker that replaces the killed one may be slow to start. The sleep may run
			// on any of the pool's workers (min_idle: 2), so one of those live before it
			// must be gone after it.
			require.NoError(t, short.Call(ctxT(t), "pid", nil))
			live := d.Workers()
			begin := time.Now()
			err = short.Call(context.Background(), "sleep", nil, 10_000)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, time.Since(begin), 5*time.Second)
			require.Eventually(t, func() bool {
				return slices.ContainsFunc(live, func(p int) bool { return !taskdtest.Alive(p) })
			}, 5*time.Second, 10*time.Millisecond, "the worker that ran the abandoned call is killed (workers before it: %v)", live)
		})
	})
}

// 7.
func TestMaxWorkersFIFO(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1\nmax_workers: 3")
		c := newClient(t, d, func(cfg *client.Config) { cfg.MaxWorkers = 1 })
		ctx := ctxT(t)
		first, err := c.Checkout(ctx)
		require.NoError(t, err)

		const n = 8
		order := make(chan int, n+1)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				co, err := c.Checkout(ctx)
				if !assert.NoError(t, err, "waiter %d", i) {
					return
				}
				order <- i
				assert.NoError(t, co.Call(ctx, "echo", nil, i))
				co.Release()
			}()
			// Each waiter is queued before the next one starts.
			require.Eventually(t, func() bool { return c.Stats().Waiting == i+1 }, 10*time.Second, time.Millisecond)
		}

		// This goroutine holds first and asks for another checkout: it queues behind the
		// n waiters instead of deadlocking, and is served after first is released.
		released := make(chan struct{})
		go func() {
			defer close(released)
			assert.Eventually(t, func() bool { return c.Stats().Waiting == n+1 }, 10*time.Second, time.Millisecond)
			first.Release()
		}()
		again, err := c.Checkout(ctx)
		require.NoError(t, err, "the holder's own second checkout")
		order <- n
		<-released
		require.NoError(t, again.Call(ctx, "echo", nil))
		again.Release()
		wg.Wait()
		close(order)

		var got []int
		for i := range order {
			got = append(got, i)
		}
		want := make([]int, n+1)
		for i := range want {
			want[i] = i
		}
		assert.Equal(t, want, got, "strict FIFO")
		st := c.Stats()
		assert.Zero(t, st.Waiting)
		assert.Zero(t, st.OpenCheckouts)
	})
}

// 8.
func TestMaxCheckoutsPIDs(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1\nmax_workers: 1")
		c := newClient(t, d, func(cfg *client.Config) { cfg.MaxCheckouts = 2 })
		var pids []int
		for range 3 {
			co, err := c.Checkout(ctxT(t))
			require.NoError(t, err)
			pids = append(pids, pidOf(t, co))
			co.Release()
		}
		assert.Equal(t, pids[0], pids[1], "A, A")
		assert.NotEqual(t, pids[1], pids[2], "then B")
		taskdtest.RequireGone(t, pids[:1], 5*time.Second)
	})
}

// 9.
func TestSurge(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1\nmax_workers: 5")
		c := newClient(t, d, func(cfg *client.Config) { cfg.Timeout = 60 * time.Second })
		const goroutines, calls = 200, 10
		var wg sync.WaitGroup
		var mu sync.Mutex
		okCalls := 0
		stopWatch := watchStall(t, c, func() int { mu.Lock(); defer mu.Unlock(); return okCalls })
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range calls {
					nonce := fmt.Sprintf("g%d-c%d-%x", g, i, time.Now().UnixNano())
					var r []string
					if !assert.NoError(t, c.Call(context.Background(), "echo", &r, nonce)) {
						return
					}
					if !assert.Equal(t, []string{nonce}, r) {
						return
					}
					mu.Lock()
					okCalls++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		stopWatch()
		assert.Equal(t, goroutines*calls, okCalls, "nothing lost")
		st := c.Stats()
		assert.Zero(t, st.OpenCheckouts)
		ds, err := c.DaemonStatus(ctxT(t))
		require.NoError(t, err)
		require.Len(t, ds.Interfaces, 1)
		assert.LessOrEqual(t, ds.Interfaces[0].Spawns, uint64(5), "within max_workers; exits: %v", ds.Interfaces[0].Exits)
		if im.direct {
			// Calls on warm leases need no checkout: taskd reclaims the leases while
			// others wait, so some calls find one warm and some go to taskd.
			t.Logf("%d one-shot calls, %d checkouts", goroutines*calls, ds.Interfaces[0].Checkouts)
			assert.LessOrEqual(t, st.WaitCount, int64(goroutines*calls))
			assert.LessOrEqual(t, ds.Interfaces[0].Checkouts, uint64(goroutines*calls))
		} else {
			assert.EqualValues(t, goroutines*calls, st.WaitCount)
			assert.EqualValues(t, goroutines*calls, ds.Interfaces[0].Checkouts)
		}
	})
}

// 10.
func TestClientBeforeDaemonAndRestart(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		dir := taskdtest.TempDir(t)
		addr := "unix:" + filepath.Join(dir, "taskd.sock")
		yaml := "shutdown_grace: 300ms\ninterfaces:\n" + ifaceYAML(t, im, "w", "min_idle: 4\nmax_workers: 8")
		c, err := client.New(client.Config{Addr: addr, Interface: "w", Timeout: 30 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })

		// No daemon at all: the checkout fails at its deadline, carrying the dial error.
		begin := time.Now()
		_, err = c.Checkout(ctxFor(t, 300*time.Millisecond))
		require.ErrorIs(t, err, client.ErrUnreachable)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var op *net.OpError
		require.ErrorAs(t, err, &op, "carries the dial error")
		assert.Contains(t, err.Error(), "taskd.sock")
		assert.GreaterOrEqual(t, time.Since(begin), 300*time.Millisecond, "at its deadline, not before")

		// Checkouts queued before the daemon exists are served once it is ready.
		type served struct {
			co  *client.Checkout
			at  time.Time
			err error
		}
		queue := func(n int) chan served {
			ch := make(chan served, n)
			for range n {
				go func() {
					co, err := c.Checkout(ctxFor(t, 30*time.Second))
					ch <- served{co, time.Now(), err}
				}()
			}
			require.Eventually(t, func() bool { return c.Stats().Waiting == n }, 10*time.Second, time.Millisecond)
			return ch
		}
		collect := func(ch chan served, n int, readyAt time.Time, what string) []*client.Checkout {
			var cos []*client.Checkout
			var first, last time.Duration
			for i := range n {
				s := <-ch
				require.NoError(t, s.err, what)
				cos = append(cos, s.co)
				if i == 0 {
					first = s.at.Sub(readyAt)
				}
				last = max(last, s.at.Sub(readyAt))
			}
			// Workers start when taskd does: the delay includes their start-up, which for
			// an interpreter behind a version-manager shim on a loaded machine can take
			// seconds. The bound catches a client that does not notice the daemon (its
			// reconnect backoff is capped at 100ms), not slow interpreters.
			t.Logf("%s: %d queued checkouts served %v (first) to %v (last) after taskd reported READY", what, n, first, last)
			assert.Less(t, last, 15*time.Second, what)
			return cos
		}
		const n = 4
		ch := queue(n)
		d := taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: dir, Wait: true})
		cos := collect(ch, n, time.Now(), "first start")
		for _, co := range cos {
			require.NoError(t, co.Call(ctxT(t), "echo", nil))
		}
		// One checkout stays held across the restart; the others go back to the pool.
		held := cos[0]
		heldPID := pidOf(t, held)
		for _, co := range cos[1:] {
			co.Release()
		}

		require.NoError(t, d.Stop(20*time.Second))
		taskdtest.RequireGone(t, []int{heldPID}, 5*time.Second)
		// Queued while there is no daemon.
		ch = queue(n)
		taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: dir, Wait: true})
		cos = collect(ch, n, time.Now(), "restart")
		for _, co := range cos {
			var got []string
			require.NoError(t, co.Call(ctxT(t), "echo", &got, "new work"))
			assert.Equal(t, []string{"new work"}, got)
			co.Release()
		}
		require.NoError(t, c.Call(ctxT(t), "echo", nil), "one-shot calls too")

		err = held.Call(ctxT(t), "echo", nil)
		require.ErrorIs(t, err, client.ErrWorkerLost, "the held checkout's worker died with the old daemon")
		requireStuck(t, held, err, client.ErrWorkerLost)
		held.Release()
		st := c.Stats()
		assert.Zero(t, st.OpenCheckouts)
		assert.Zero(t, st.Waiting)
	})
}

// 11.
func TestWorkerLogsReachLogger(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1")
		core, obs := observer.New(zapcore.DebugLevel)
		c := newClient(t, d, func(cfg *client.Config) { cfg.Logger = zap.New(core) })
		co := checkout(t, c)
		w := co.Worker()
		ctx := ctxT(t)

		check := func(e observer.LoggedEntry, msg string, before, after time.Time) {
			t.Helper()
			assert.Equal(t, msg, e.Message)
			assert.Equal(t, zapcore.InfoLevel, e.Level)
			f := e.ContextMap()
			assert.Equal(t, "w", f["interface"])
			assert.Equal(t, w.ID, f["worker"])
			assert.EqualValues(t, w.PID, f["pid"])
			assert.Equal(t, "log", f["method"])
			ts, ok := f["worker_ts"].(time.Time)
			if assert.True(t, ok, "worker_ts is a time: %#v", f["worker_ts"]) {
				// The worker's own clock, on this host: within the call, give or take.
				assert.WithinRange(t, ts, before.Add(-time.Second), after.Add(time.Second))
			}
		}

		// Each record is in the logger when the call returns.
		for i := range 3 {
			msg := fmt.Sprintf("call %d: ünïcødé 𝄞", i)
			before := time.Now()
			var ok bool
			require.NoError(t, co.Call(ctx, "log", &ok, msg))
			after := time.Now()
			assert.True(t, ok)
			entries := obs.TakeAll()
			require.Len(t, entries, 1, "before the call returned")
			check(entries[0], msg, before, after)
		}

		// Pipelined calls: the records arrive in order.
		before := time.Now()
		var ps []*client.Pending
		for i := range 5 {
			ps = append(ps, co.Go("log", fmt.Sprint("pipelined ", i)))
		}
		require.NoError(t, ps[len(ps)-1].Wait(ctx, nil))
		after := time.Now()
		entries := obs.TakeAll()
		require.Len(t, entries, 5, "every record, when the last call returned")
		for i, e := range entries {
			check(e, fmt.Sprint("pipelined ", i), before, after)
		}
		for _, p := range ps {
			require.NoError(t, p.Wait(ctx, nil))
		}

		// Calls that log nothing add nothing.
		require.NoError(t, co.Call(ctx, "echo", nil))
		assert.Zero(t, obs.Len())
	})
}

// 12.
func TestReleaseAndClose(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 1\nmax_workers: 2\ncancel_grace: 100ms")

		t.Run("Release", func(t *testing.T) {
			c := newClient(t, start(t, im, "min_idle: 1\nmax_workers: 1\ncancel_grace: 100ms"))
			ctx := ctxT(t)
			co, err := c.Checkout(ctx)
			require.NoError(t, err)
			w := co.Worker()
			p := pidOf(t, co)
			co.Release()
			co.Release()
			require.ErrorIs(t, co.Call(ctx, "echo", nil), client.ErrReleased)
			require.ErrorIs(t, co.Go("echo").Wait(ctx, nil), client.ErrReleased)
			co.Abort(errors.New("after release"))
			require.ErrorIs(t, co.Call(ctx, "echo", nil), client.ErrReleased, "Abort after Release does nothing")
			assert.Equal(t, w, co.Worker(), "Worker stays valid")
			co.Release()

			// A released worker is pooled: the next checkout gets it (LIFO idle).
			co2, err := c.Checkout(ctx)
			require.NoError(t, err)
			assert.Equal(t, p, pidOf(t, co2))
			// Released with a call running: the call gets ErrReleased and the worker is
			// killed after cancel_grace (not stopped gracefully: taskd's stop grace is 2s,
			// and a spinning call would burn CPU and hold the pool slot meanwhile).
			pending := co2.Go("spin")
			require.Eventually(t, func() bool { return workerMethod(t, c, p) == "spin" }, 10*time.Second, 5*time.Millisecond)
			co2.Release()
			require.ErrorIs(t, pending.Wait(ctx, nil), client.ErrReleased)
			taskdtest.RequireGone(t, []int{p}, 1500*time.Millisecond)
			co3, err := c.Checkout(ctx)
			require.NoError(t, err, "the pool slot (max_workers: 1) is free again")
			assert.NotEqual(t, p, pidOf(t, co3))
			co3.Release()
			assert.Zero(t, c.Stats().OpenCheckouts)
		})

		t.Run("Close", func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			c, err := client.New(client.Config{Addr: d.Addr, Interface: "w", MaxWorkers: 2})
			require.NoError(t, err)
			ctx := ctxT(t)
			held, err := c.Checkout(ctx)
			require.NoError(t, err)
			busy, err := c.Checkout(ctx)
			require.NoError(t, err)
			busyPID := pidOf(t, busy)
			running := busy.Go("sleep", 10_000)
			// Running, not only sent: over a direct lease a call the worker has not read
			// yet is dropped unread when the lease ends, and the worker is pooled clean.
			require.Eventually(t, func() bool { return workerMethod(t, c, busyPID) == "sleep" }, 10*time.Second, 5*time.Millisecond)
			queued := make(chan error, 3)
			for range 3 {
				go func() {
					_, err := c.Checkout(ctx)
					queued <- err
				}()
			}
			require.Eventually(t, func() bool { return c.Stats().Waiting == 3 }, 10*time.Second, time.Millisecond)

			require.NoError(t, c.Close())
			for range 3 {
				require.ErrorIs(t, <-queued, client.ErrClosed, "queued checkouts fail")
			}
			require.ErrorIs(t, held.Call(ctx, "echo", nil), client.ErrClosed, "held checkouts fail")
			require.ErrorIs(t, running.Wait(ctx, nil), client.ErrClosed, "and their calls in flight")
			_, err = c.Checkout(ctx)
			require.ErrorIs(t, err, client.ErrClosed)
			require.ErrorIs(t, c.Call(ctx, "echo", nil), client.ErrClosed)
			require.NoError(t, c.Close(), "idempotent")
			held.Release()
			busy.Release()
			// taskd released the connection's workers; the busy one was killed after
			// cancel_grace (over a direct lease: cancel on control, end, then the kill).
			taskdtest.RequireGone(t, []int{busyPID}, 5*time.Second) // cancel_grace, then the kill: slack for a loaded machine
		})

		t.Run("Close concurrently", func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			c, err := client.New(client.Config{Addr: d.Addr, Interface: "w"})
			require.NoError(t, err)
			require.NoError(t, c.Call(ctxT(t), "echo", nil))
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					assert.NoError(t, c.Close())
				}()
			}
			wg.Wait()
		})
	})
}

// 13.
func TestStats(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		d := start(t, im, "min_idle: 2\nmax_workers: 2")
		c := newClient(t, d, func(cfg *client.Config) { cfg.MaxWorkers = 2 })
		ctx := ctxT(t)
		assert.Equal(t, client.Stats{MaxWorkers: 2}, c.Stats(), "before anything")

		a, err := c.Checkout(ctx)
		require.NoError(t, err)
		b, err := c.Checkout(ctx)
		require.NoError(t, err)
		st := c.Stats()
		assert.Equal(t, 2, st.OpenCheckouts)
		assert.Zero(t, st.Waiting)
		assert.EqualValues(t, 2, st.WaitCount)
		assert.Positive(t, st.WaitDuration, "every checkout waits at least a round trip")
		base := st.WaitDuration

		begin := time.Now()
		got := make(chan *client.Checkout, 1)
		go func() {
			co, err := c.Checkout(ctx)
			assert.NoError(t, err)
			got <- co
		}()
		require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, 10*time.Second, time.Millisecond)
		seen := time.Now() // the third checkout was waiting at this point...
		st = c.Stats()
		assert.Equal(t, 2, st.OpenCheckouts)
		assert.EqualValues(t, 2, st.WaitCount, "WaitCount counts finished waits")
		a.Release()
		released := time.Now() // ...and still waiting here
		third := <-got
		total := time.Since(begin)
		require.NotNil(t, third)

		st = c.Stats()
		assert.Equal(t, 2, st.OpenCheckouts)
		assert.Zero(t, st.Waiting)
		assert.EqualValues(t, 3, st.WaitCount)
		waited := st.WaitDuration - base
		assert.GreaterOrEqual(t, waited, released.Sub(seen), "the third checkout's wait is counted")
		assert.LessOrEqual(t, waited, total)

		// A wait that ends in an error is counted too.
		_, err = c.Checkout(ctxFor(t, 50*time.Millisecond))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		st = c.Stats()
		assert.EqualValues(t, 4, st.WaitCount)
		// The deadline counts from ctxFor, a moment before the wait began: not a full 50ms.
		assert.GreaterOrEqual(t, st.WaitDuration-base-waited, 40*time.Millisecond)

		b.Release()
		third.Release()
		third.Release()
		st = c.Stats()
		assert.Zero(t, st.OpenCheckouts, "a double Release counts once")
		assert.Equal(t, 2, st.MaxWorkers)
	})
}

// 14.

// queuedCheckoutsHeap queues n checkouts on a fresh client of d (whose interface "w" has
// its only worker held, so they all wait in taskd) and returns the client heap they cost,
// measured with runtime.ReadMemStats after GC. The goroutines that wait are the
// application's; their stacks are not heap, but their descriptors are, and are counted.
func queuedCheckoutsHeap(tb testing.TB, addr string, n int) uint64 {
	c, err := client.New(client.Config{Addr: addr, Interface: "w"})
	require.NoError(tb, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	held, err := c.Checkout(ctx)
	require.NoError(tb, err)
	defer held.Release()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if co, err := c.Checkout(ctx); err == nil {
				co.Release()
			} else if !errors.Is(err, context.Canceled) {
				errs <- err
			}
		}()
	}
	require.Eventually(tb, func() bool { return c.Stats().Waiting == n }, time.Minute, time.Millisecond)
	// All of them sent and waiting in taskd: its queue (max_queue) would refuse the rest.
	require.Eventually(tb, func() bool {
		st, err := c.DaemonStatus(ctx)
		return err == nil && st.Interfaces[0].Queued == n
	}, time.Minute, 10*time.Millisecond)
	runtime.GC()
	runtime.ReadMemStats(&after)
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Error(err)
	}
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

const queuedN = 10_000

func queuedYAML(t *testing.T, im impl) string {
	return "interfaces:\n" + ifaceYAML(t, im, "w", fmt.Sprintf("min_idle: 1\nmax_workers: 1\nmax_queue: %d", queuedN))
}

func TestQueuedCheckoutsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("queues 10,000 checkouts")
	}
	forEach(t, false, func(t *testing.T, im impl) {
		d := taskdtest.Start(t, queuedYAML(t, im))
		heap := queuedCheckoutsHeap(t, d.Addr, queuedN)
		t.Logf("%d queued checkouts: %.2f MB of client heap (%d B each)", queuedN, float64(heap)/1e6, heap/queuedN)
		assert.LessOrEqual(t, heap, uint64(20e6), "at most 20 MB for 10,000 queued checkouts")
	})
}

// BenchmarkQueuedCheckoutsMemory reports the client heap cost of 10,000 checkouts waiting
// in a real taskd, as the custom metric heap-MB/10k (and heap-B/checkout). The checkouts
// never reach a worker, so the Go worker stands for every implementation.
func BenchmarkQueuedCheckoutsMemory(b *testing.B) {
	yaml := "interfaces:\n" + fmt.Sprintf("  w:\n    command: [%q]\n    min_idle: 1\n    max_workers: 1\n    max_queue: %d\n",
		taskdtest.Binary(b, "internal/conformance/goworker"), queuedN)
	d := taskdtest.Start(b, yaml)
	var total uint64
	for range b.N {
		total += queuedCheckoutsHeap(b, d.Addr, queuedN)
	}
	avg := float64(total) / float64(b.N)
	b.ReportMetric(avg/1e6, "heap-MB/10k")
	b.ReportMetric(avg/queuedN, "heap-B/checkout")
}

// watchStall logs, once, what the Client and taskd say (client stats, pools, checkouts
// held) if progress (done's count) stands still for 10s while the test runs: the picture
// of a hang, for a failure that is hard to reproduce. The returned func stops it.
func watchStall(t *testing.T, c *client.Client, done func() int) (stop func()) {
	quit, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		last := -1
		for {
			select {
			case <-quit:
				return
			case <-time.After(10 * time.Second):
			}
			n := done()
			if n != last {
				last = n
				continue
			}
			t.Logf("STALLED at %d: client stats %+v", n, c.Stats())
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ds, err := c.DaemonStatus(ctx)
			t.Logf("STALLED: daemon status (err %v): %+v", err, ds)
			cos, err := c.Checkouts(ctx, "")
			t.Logf("STALLED: %d checkouts held (err %v): %+v", len(cos), err, cos)
			cancel()
			return
		}
	}()
	return func() { close(quit); <-exited }
}
