package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/wire"
)

func TestMain(m *testing.M) {
	taskdtest.Main(withExampleDaemon{m})
}

// withExampleDaemon runs the package's tests and examples with a real taskd serving
// interface "echo" (the conformance suite's Go worker), interface "locked" that nobody
// may use (allow: {}), and TASKD_ADDR pointing at it, so that
// the Example functions (example_test.go) run against it with a Config that names only the
// interface. The daemon is stopped before goleak looks for leaked goroutines.
type withExampleDaemon struct{ m *testing.M }

func (w withExampleDaemon) Run() int {
	worker, err := taskdtest.BuildForMain("internal/conformance/goworker")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	addr, stop, err := taskdtest.StartForMain(fmt.Sprintf(`interfaces:
  echo:
    command: [%q]
    min_idle: 1
    max_workers: 4
    call_timeout: 1s
  locked:
    command: [%q]
    min_idle: 0
    allow: {}
`, worker, worker))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv("TASKD_ADDR", addr)
	code := w.m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	return code
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Interface == "" {
		cfg.Interface = "echo"
	}
	c, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// checkedOut starts a fake daemon and a client of it, and checks out a worker that is
// released when the test ends.
func checkedOut(t *testing.T) (*fakeDaemon, *Client, context.Context, *Checkout) {
	t.Helper()
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr()})
	ctx := ctxTimeout(t, 5*time.Second)
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	t.Cleanup(co.Release)
	return d, c, ctx, co
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestNew(t *testing.T) {
	t.Run("validates", func(t *testing.T) {
		for _, cfg := range []Config{
			{Addr: "localhost:80"},
			{Addr: "unix:relative.sock"},
			{Addr: "unix:/x", MaxWorkers: -1},
			{Addr: "unix:/x", MaxCheckouts: -1},
		} {
			_, err := New(cfg)
			assert.Error(t, err, "%+v", cfg)
		}
	})
	t.Run("does not mutate or dial", func(t *testing.T) {
		t.Setenv("TASKD_ADDR", "unix:///nowhere/taskd.sock")
		cfg := Config{Interface: "x"}
		c, err := New(cfg)
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, Config{Interface: "x"}, cfg)
		assert.Equal(t, "unix:/nowhere/taskd.sock", c.cfg.Addr)
		assert.False(t, c.lanes[0].started, "New must not start dialling")
	})
	t.Run("default addr", func(t *testing.T) {
		t.Setenv("TASKD_ADDR", "")
		c, err := New(Config{})
		require.NoError(t, err)
		defer c.Close()
		assert.Equal(t, wire.DefaultAddr(), c.cfg.Addr)
	})
}

func TestCheckoutWithoutInterface(t *testing.T) {
	d := newFakeDaemon(t)
	c, err := New(Config{Addr: d.addr()})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Checkout(context.Background())
	require.ErrorIs(t, err, ErrUnknownInterface)
	assert.Contains(t, err.Error(), "Config.Interface is empty")

	// Admin requests work without an interface.
	pr, err := c.Ping(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, "9.9.9-test", pr.Version)
	assert.Positive(t, pr.RTT)
	st, err := c.DaemonStatus(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	assert.Equal(t, 42, st.PID)
	require.Len(t, st.Interfaces, 1)
	assert.Equal(t, "echo-1", st.Interfaces[0].Workers[0].ID)
}

func TestRoundTrip(t *testing.T) {
	d, _, ctx, co := checkedOut(t)
	assert.Equal(t, WorkerInfo{ID: "echo-1", PID: 1001}, co.Worker())

	type nested struct {
		Name  string         `json:"name"`
		List  []any          `json:"list"`
		Map   map[string]int `json:"map"`
		Emoji string         `json:"😀 key"`
	}
	const big int64 = 1<<62 + 1 // not representable in a float64
	in := nested{Name: "𝄞 clef — ✓", List: []any{1, "two", []any{3.5, nil}, map[string]any{"k": true}}, Map: map[string]int{"a": 1}, Emoji: "🎉"}

	var out struct {
		N   nested
		Big int64
	}
	var raw []json.RawMessage
	require.NoError(t, co.Call(ctx, "echo", &raw, in, big))
	require.Len(t, raw, 2)
	require.NoError(t, json.Unmarshal(raw[0], &out.N))
	require.NoError(t, json.Unmarshal(raw[1], &out.Big))
	assert.Equal(t, in.Name, out.N.Name)
	assert.Equal(t, in.Emoji, out.N.Emoji)
	assert.Equal(t, big, out.Big)

	// Straight into typed results.
	var bigs []int64
	require.NoError(t, co.Call(ctx, "echo", &bigs, big, -big))
	assert.Equal(t, []int64{big, -big}, bigs)

	// Into json.Number: exact.
	var numRes []json.Number
	require.NoError(t, co.Call(ctx, "echo", &numRes, big))
	assert.Equal(t, json.Number("4611686018427387905"), numRes[0])

	// Raw and discarded results; no arguments.
	var rm json.RawMessage
	require.NoError(t, co.Call(ctx, "echo", &rm))
	assert.JSONEq(t, `[]`, string(rm))
	require.NoError(t, co.Call(ctx, "echo", nil, 1))

	// Function-style: no "m" on the wire.
	var fn struct{ Function []string }
	require.NoError(t, co.Call(ctx, "", &fn, "x"))
	assert.Equal(t, []string{"x"}, fn.Function)
	calls := d.received(wire.TCall)
	assert.Equal(t, "", calls[len(calls)-1].M)

	// A result of the wrong type is the caller's problem, not a fatal one.
	var wrong int
	err := co.Call(ctx, "echo", &wrong, "s")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "decoding result")
	require.NoError(t, co.Call(ctx, "echo", nil))

	// Arguments that do not encode are not sent.
	err = co.Call(ctx, "echo", nil, func() {})
	require.Error(t, err)
	require.NoError(t, co.Call(ctx, "echo", nil))
}

func TestPipelinedCallsAnswerInOrder(t *testing.T) {
	_, _, ctx, co := checkedOut(t)
	var ps []*Pending
	for i := range 50 {
		ps = append(ps, co.Go("echo", i))
	}
	for i, p := range ps {
		var r []int
		require.NoError(t, p.Wait(ctx, &r))
		assert.Equal(t, []int{i}, r)
	}
}

func TestRemoteErrorThenAborted(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(map[bool]string{false: "retire", true: "keep"}[keep], func(t *testing.T) {
			d := newFakeDaemon(t)
			// taskd answers a call queued behind a failing one with fail/aborted.
			d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
				if m.T == wire.TCall && m.M == "queued" {
					fc.send(wire.ClientMsg{T: wire.TFail, Co: m.Co, ID: m.ID, Code: wire.CodeAborted, Msg: "an earlier call raised"})
					return true
				}
				return false
			})
			c := newClient(t, Config{Addr: d.addr(), KeepWorkerAfterError: keep})
			ctx := ctxTimeout(t, 5*time.Second)
			co, err := c.Checkout(ctx)
			require.NoError(t, err)
			assert.Equal(t, keep, d.received(wire.TCheckout)[0].Keep)

			p1 := co.Go("raise", 1)
			p2 := co.Go("queued")
			err = p1.Wait(ctx, nil)
			var re *RemoteError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, RemoteError{Interface: "echo", Method: "raise", Message: "boom", Type: "ValueError", Trace: "tb"}, *re)
			assert.Contains(t, err.Error(), "echo.raise")
			assert.Contains(t, err.Error(), "ValueError: boom")

			err = p2.Wait(ctx, nil)
			require.ErrorIs(t, err, ErrAborted)
			assert.Contains(t, err.Error(), "an earlier call raised")
			assert.NotErrorIs(t, err, ErrWorkerLost)

			// Still usable.
			var r []string
			require.NoError(t, co.Call(ctx, "echo", &r, "again"))
			assert.Equal(t, []string{"again"}, r)

			// taskd decides at release whether the worker is retired (it saw the err and
			// knows keep from the request): the client only releases.
			co.Release()
			rel := d.waitReceived(wire.TRelease, 1)
			assert.False(t, rel[0].Retire)
		})
	}
}

func TestFatalErrorsAreSticky(t *testing.T) {
	for _, tc := range []struct {
		method string
		is     []error
	}{
		{"lost", []error{ErrWorkerLost}},
		{"timeout", []error{ErrCallTimeout, ErrWorkerLost}},
		{"proto", []error{ErrProtocol, ErrWorkerLost}},
	} {
		t.Run(tc.method, func(t *testing.T) {
			d, c, ctx, co := checkedOut(t)
			err := co.Call(ctx, tc.method, nil)
			for _, target := range tc.is {
				require.ErrorIs(t, err, target)
			}
			calls := len(d.received(wire.TCall))
			// Every later call fails at once with the same error, and nothing is sent.
			assert.Equal(t, err, co.Call(ctx, "echo", nil))
			assert.Equal(t, err, co.Go("echo").Wait(ctx, nil))
			co.Release()
			syncConn(t, c) // whatever was sent has arrived
			assert.Len(t, d.received(wire.TCall), calls)
			assert.Empty(t, d.received(wire.TRelease), "a lost checkout needs no release")
		})
	}
}

func TestDeadlineIsFatal(t *testing.T) {
	d, c, ctx, co := checkedOut(t)

	// A call made and waited for in other goroutines, with their own deadline.
	p := co.Go("hang")
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	err := p.Wait(short, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "echo.hang")
	assert.Contains(t, err.Error(), "check out again")

	ab := d.waitReceived(wire.TAbort, 1)
	assert.Equal(t, d.received(wire.TCall)[0].Co, ab[0].Co)

	// A late answer is never delivered.
	call := d.received(wire.TCall)[0]
	anyConn(d).send(wire.ClientMsg{T: wire.TOK, Co: call.Co, ID: call.ID, R: json.RawMessage(`1`)})
	syncConn(t, c) // the late answer has been dispatched
	assert.Equal(t, err, p.Wait(ctx, nil))
	assert.Equal(t, err, co.Call(ctx, "echo", nil))

	// Cancellation likewise, and Config.Timeout applies when ctx has no deadline.
	c2 := newClient(t, Config{Addr: d.addr(), Timeout: 20 * time.Millisecond})
	co2, err := c2.Checkout(ctx)
	require.NoError(t, err)
	defer co2.Release()
	err = co2.Call(context.Background(), "hang", nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	co3, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co3.Release()
	cctx, ccancel := context.WithCancel(ctx)
	res := make(chan error, 1)
	go func() { res <- co3.Call(cctx, "hang", nil) }()
	d.waitReceived(wire.TCall, 3)
	ccancel()
	err = <-res
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, err, co3.Call(ctx, "echo", nil))

	// A ctx already done before the call is sent is not fatal.
	co4, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co4.Release()
	require.ErrorIs(t, co4.Call(cctx, "echo", nil), context.Canceled)
	require.NoError(t, co4.Call(ctx, "echo", nil))
}

func TestAbortDuringCall(t *testing.T) {
	d, c, ctx, co := checkedOut(t)

	res := make(chan error, 1)
	go func() { res <- co.Call(ctx, "hang", nil) }()
	call := d.waitReceived(wire.TCall, 1)[0]
	co.Abort(errTest)
	err := <-res
	require.ErrorIs(t, err, ErrAborted)
	require.ErrorIs(t, err, errTest)
	assert.Contains(t, err.Error(), "test error")
	ab := d.waitReceived(wire.TAbort, 1)
	assert.Equal(t, call.Co, ab[0].Co)
	assert.Contains(t, ab[0].Msg, "test error")

	co.Abort(errors.New("second")) // no-op
	assert.Equal(t, err, co.Call(ctx, "echo", nil))
	assert.Len(t, d.received(wire.TAbort), 1)

	// Abort(nil) on another checkout.
	co2, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co2.Release()
	co2.Abort(nil)
	require.ErrorIs(t, co2.Call(ctx, "echo", nil), ErrAborted)
}

func TestRelease(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), MaxWorkers: 1})
	ctx := ctxTimeout(t, 5*time.Second)
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	p := co.Go("hang")
	co.Release()
	co.Release()
	require.ErrorIs(t, p.Wait(ctx, nil), ErrReleased)
	require.ErrorIs(t, co.Call(ctx, "echo", nil), ErrReleased)
	require.ErrorIs(t, co.Go("echo").Wait(ctx, nil), ErrReleased)
	co.Abort(errTest)
	assert.Equal(t, "echo-1", co.Worker().ID)

	// The slot is free again: a second checkout succeeds with MaxWorkers 1.
	co2, err := c.Checkout(ctx)
	require.NoError(t, err)
	co2.Release()

	syncConn(t, c)
	rel := d.received(wire.TRelease)
	require.Len(t, rel, 2, "one release per checkout")
	assert.Equal(t, []uint64{co.id, co2.id}, []uint64{rel[0].Co, rel[1].Co})
	assert.Empty(t, d.received(wire.TAbort))
}

// MaxCheckouts travels with each checkout request: taskd retires the worker at release
// once it has served that many (it knows the count; conformance tests it for real).
func TestMaxCheckoutsTravelsWithRequests(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), MaxCheckouts: 2})
	ctx := ctxTimeout(t, 5*time.Second)
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	co.Release()
	require.NoError(t, c.Call(ctx, "echo", nil))
	reqs := d.received(wire.TCheckout)
	require.Len(t, reqs, 2)
	assert.Equal(t, []int{2, 2}, []int{reqs[0].Max, reqs[1].Max})
	assert.False(t, d.waitReceived(wire.TRelease, 1)[0].Retire)
}

func TestMaxWorkersFIFO(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), MaxWorkers: 1})
	ctx := ctxTimeout(t, 10*time.Second)

	first, err := c.Checkout(ctx)
	require.NoError(t, err)

	const n = 5
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co, err := c.Checkout(ctx)
			if !assert.NoError(t, err) {
				return
			}
			order <- i
			co.Release()
		}()
		// Queue them one at a time, so their order is known.
		require.Eventually(t, func() bool { return c.Stats().Waiting == i+1 }, 5*time.Second, time.Millisecond)
	}

	// The goroutine holding the first checkout asks for another: it waits its turn behind
	// the n queued ones (no deadlock). The first is released from elsewhere once it waits.
	released := make(chan struct{})
	go func() {
		defer close(released)
		assert.Eventually(t, func() bool { return c.Stats().Waiting == n+1 }, 5*time.Second, time.Millisecond)
		first.Release()
	}()
	second, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer second.Release()
	<-released
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	assert.Equal(t, []int{0, 1, 2, 3, 4}, got)
	assert.Len(t, d.received(wire.TCheckout), n+2)

	st := c.Stats()
	assert.Equal(t, 1, st.MaxWorkers)
	assert.Equal(t, 1, st.OpenCheckouts)
	assert.Equal(t, 0, st.Waiting)
	assert.EqualValues(t, n+2, st.WaitCount)
	assert.Positive(t, st.WaitDuration)
}

func TestSlotWaitDeadline(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), MaxWorkers: 1})
	co, err := c.Checkout(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	_, err = c.Checkout(ctxTimeout(t, 10*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "MaxWorkers=1")
	co.Release()
	co, err = c.Checkout(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
	co.Release()
}

func TestCheckoutRefused(t *testing.T) {
	for _, tc := range []struct {
		code string
		is   error
	}{
		{wire.CodeUnknownInterface, ErrUnknownInterface},
		{wire.CodeOverloaded, ErrOverloaded},
		{wire.CodeUnavailable, ErrUnavailable},
	} {
		t.Run(tc.code, func(t *testing.T) {
			d := newFakeDaemon(t)
			d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
				if m.T == wire.TCheckout {
					fc.send(wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: tc.code, Msg: "daemon says why"})
					return true
				}
				return false
			})
			c := newClient(t, Config{Addr: d.addr(), MaxWorkers: 1})
			_, err := c.Checkout(ctxTimeout(t, 5*time.Second))
			require.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), "daemon says why")
			assert.Contains(t, err.Error(), `"echo"`)
			// The slot was given back.
			_, err = c.Checkout(ctxTimeout(t, 5*time.Second))
			require.ErrorIs(t, err, tc.is)
		})
	}
}

func TestShuttingDownWaitsForRestart(t *testing.T) {
	d := newFakeDaemon(t)
	var mu sync.Mutex
	draining := true
	d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
		mu.Lock()
		defer mu.Unlock()
		if m.T == wire.TCheckout && draining {
			fc.send(wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeShuttingDown, Msg: "draining"})
			return true
		}
		return false
	})
	c := newClient(t, Config{Addr: d.addr()})

	// Draining and never coming back: the checkout fails at its deadline.
	_, err := c.Checkout(ctxTimeout(t, 50*time.Millisecond))
	require.ErrorIs(t, err, ErrShuttingDown)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "draining")

	// Restarted: waiting checkouts are served by the new daemon, without errors.
	ctx := ctxTimeout(t, 10*time.Second)
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- c.Call(ctx, "echo", nil) }()
	}
	require.Eventually(t, func() bool { return c.Stats().Waiting == 2 }, 5*time.Second, time.Millisecond)
	mu.Lock()
	draining = false
	mu.Unlock()
	d.dropConns()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
}

func TestAbandonedCheckoutGrantedLate(t *testing.T) {
	d := newFakeDaemon(t)
	d.setHold(true)
	c := newClient(t, Config{Addr: d.addr()})

	_, err := c.Checkout(ctxTimeout(t, 30*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "max_workers")
	ab := d.waitReceived(wire.TAbandon, 1)
	assert.Equal(t, d.received(wire.TCheckout)[0].ID, ab[0].ID)

	// taskd granted it before it saw the abandon: the client releases it at once.
	d.setHold(false)
	co := d.grantTo(anyConn(d), ab[0].ID)
	rel := d.waitReceived(wire.TRelease, 1)
	assert.Equal(t, co, rel[0].Co)
	assert.False(t, rel[0].Retire)
	assert.Equal(t, 0, c.Stats().OpenCheckouts)

	// Abandoned while waiting: taskd answers "refused abandoned", which is ignored.
	d.setHold(true)
	_, err = c.Checkout(ctxTimeout(t, 30*time.Millisecond))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	d.waitReceived(wire.TAbandon, 2)
	require.Eventually(t, func() bool { return d.numWaiting() == 0 }, 5*time.Second, time.Millisecond)
	syncConn(t, c) // the refusal has been dispatched
	st := c.Stats()
	assert.Equal(t, 0, st.OpenCheckouts+st.Waiting)
	assert.Len(t, d.received(wire.TRelease), 1, "nothing to release for a refused checkout")
	d.setHold(false)
	co2, err := c.Checkout(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err, "the client goes on checking out")
	co2.Release()
}

func anyConn(d *fakeDaemon) *fakeConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	for fc := range d.conns {
		return fc
	}
	return nil
}

func TestCloseFailsQueuedAndHeld(t *testing.T) {
	d := newFakeDaemon(t)
	d.setHold(true)
	c, err := New(Config{Addr: d.addr(), Interface: "echo", MaxWorkers: 2})
	require.NoError(t, err)
	ctx := ctxTimeout(t, 10*time.Second)

	got := make(chan *Checkout, 1) // the goroutine never blocks, even if the test fails first
	go func() {
		co, _ := c.Checkout(ctx)
		got <- co
	}()
	d.waitReceived(wire.TCheckout, 1)
	d.grantNext()
	held := <-got
	require.NotNil(t, held)

	errs := make(chan error, 2)
	for i := range 2 { // one waits in taskd, one for a MaxWorkers slot
		go func() {
			_, err := c.Checkout(ctx)
			errs <- err
		}()
		require.Eventually(t, func() bool { return c.Stats().Waiting == i+1 }, 5*time.Second, time.Millisecond)
	}
	d.waitReceived(wire.TCheckout, 2)
	pending := held.Go("hang")

	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	for range 2 {
		require.ErrorIs(t, <-errs, ErrClosed)
	}
	require.ErrorIs(t, held.Call(ctx, "echo", nil), ErrClosed)
	require.ErrorIs(t, pending.Wait(ctx, nil), ErrClosed)
	held.Release()
	require.ErrorIs(t, held.Call(ctx, "echo", nil), ErrReleased)
	_, err = c.Checkout(ctx)
	require.ErrorIs(t, err, ErrClosed)
	_, err = c.Ping(ctx)
	require.ErrorIs(t, err, ErrClosed)
}

func TestUnreachable(t *testing.T) {
	c := newClient(t, Config{Addr: "unix:/nonexistent-taskd-dir/taskd.sock"})
	start := time.Now()
	_, err := c.Checkout(ctxTimeout(t, 50*time.Millisecond))
	require.ErrorIs(t, err, ErrUnreachable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var op *net.OpError
	require.ErrorAs(t, err, &op, "carries the dial error")
	assert.Contains(t, err.Error(), "no such file or directory")
	assert.Contains(t, err.Error(), "start taskd")
	assert.Less(t, time.Since(start), 2*time.Second)

	// Admin requests fail fast instead of waiting.
	start = time.Now()
	_, err = c.Ping(ctxTimeout(t, 20*time.Second))
	require.ErrorIs(t, err, ErrUnreachable)
	require.ErrorAs(t, err, &op)
	_, err = c.DaemonStatus(ctxTimeout(t, 20*time.Second))
	require.ErrorIs(t, err, ErrUnreachable)
	assert.Less(t, time.Since(start), 5*time.Second)

	// One-shot calls too.
	err = c.Call(ctxTimeout(t, 20*time.Millisecond), "echo", nil)
	require.ErrorIs(t, err, ErrUnreachable)
}

func TestStartBeforeDaemonAndReconnect(t *testing.T) {
	path := sockPath(t)
	c := newClient(t, Config{Addr: "unix:" + path, Timeout: 10 * time.Second})
	ctx := ctxTimeout(t, 10*time.Second)

	// Checkouts queued before the daemon exists are served once it starts.
	const n = 3
	cos := make(chan *Checkout, n)
	for range n {
		go func() {
			co, err := c.Checkout(ctx)
			assert.NoError(t, err)
			cos <- co
		}()
	}
	require.Eventually(t, func() bool { return c.Stats().Waiting == n }, 5*time.Second, time.Millisecond)
	d := startFakeDaemon(t, path)
	var held []*Checkout
	for range n {
		co := <-cos
		require.NotNil(t, co)
		held = append(held, co)
	}
	require.NoError(t, held[0].Call(ctx, "echo", nil))

	// A checkout in flight when the connection breaks is sent again on the next one;
	// checkouts held on the broken connection are lost.
	d.setHold(true)
	res := make(chan *Checkout, 1)
	go func() {
		co, err := c.Checkout(ctx)
		assert.NoError(t, err)
		res <- co
	}()
	first := d.waitReceived(wire.TCheckout, n+1)[n]
	d.dropConns()
	again := d.waitReceived(wire.TCheckout, n+2)[n+1]
	assert.Equal(t, first.ID, again.ID)
	require.Eventually(t, func() bool { return d.numWaiting() == 1 }, 5*time.Second, time.Millisecond)
	d.grantNext()
	co := <-res
	require.NotNil(t, co)
	require.NoError(t, co.Call(ctx, "echo", nil))
	co.Release()

	for _, h := range held {
		err := h.Call(ctx, "echo", nil)
		require.ErrorIs(t, err, ErrWorkerLost)
		assert.Contains(t, err.Error(), "connection to taskd")
		h.Release()
	}
}

func TestDaemonRestartWhileWaiting(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr()})
	ctx := ctxTimeout(t, 10*time.Second)
	require.NoError(t, c.Call(ctx, "echo", nil))

	// The daemon goes away entirely and comes back at the same address.
	d.stop()
	res := make(chan error, 1)
	go func() { res <- c.Call(ctx, "echo", nil) }()
	require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	startFakeDaemon(t, d.path)
	require.NoError(t, <-res)
}

func TestDaemonProtocolViolation(t *testing.T) {
	d := newFakeDaemon(t)
	d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
		if m.T == wire.TCall && m.M == "garbage" {
			fc.sendRaw("{\"t\":\"ok\"}\n") // ok without co/id
			return true
		}
		return false
	})
	c := newClient(t, Config{Addr: d.addr()})
	ctx := ctxTimeout(t, 5*time.Second)
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	err = co.Call(ctx, "garbage", nil)
	require.ErrorIs(t, err, ErrWorkerLost)
	require.ErrorIs(t, err, ErrProtocol)
	co.Release()
	// The client reconnects for the next checkout.
	require.NoError(t, c.Call(ctx, "echo", nil))
}

func TestWorkerLogs(t *testing.T) {
	d := newFakeDaemon(t)
	logs := json.RawMessage(`[
		{"ts":1700000000.5,"lvl":"info","msg":"first","f":{"user":"bob","n":9007199254740993,"x":1.5,"obj":{"a":[1]}}},
		{"ts":1700000001,"lvl":"warning","msg":"second"},
		{"ts":1700000002,"lvl":"fatal","msg":"third"}]`)
	d.setHandler(func(fc *fakeConn, m wire.ClientMsg) bool {
		switch {
		case m.T == wire.TCall && m.M == "logs":
			fc.send(wire.ClientMsg{T: wire.TOK, Co: m.Co, ID: m.ID, R: json.RawMessage(`true`), Logs: logs})
			return true
		case m.T == wire.TCall && m.M == "logerr":
			fc.send(wire.ClientMsg{T: wire.TErr, Co: m.Co, ID: m.ID, E: json.RawMessage(`{"msg":"x"}`),
				Logs: json.RawMessage(`[{"ts":1,"lvl":"error","msg":"before raising"}]`)})
			return true
		}
		return false
	})
	core, obs := observer.New(zapcore.DebugLevel)
	c := newClient(t, Config{Addr: d.addr(), Logger: zap.New(core)})
	ctx := ctxTimeout(t, 5*time.Second)
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	defer co.Release()

	require.NoError(t, co.Call(ctx, "logs", nil))
	entries := obs.TakeAll() // before Call returned
	require.Len(t, entries, 3)
	assert.Equal(t, []string{"first", "second", "third"}, []string{entries[0].Message, entries[1].Message, entries[2].Message})
	assert.Equal(t, []zapcore.Level{zapcore.InfoLevel, zapcore.WarnLevel, zapcore.ErrorLevel},
		[]zapcore.Level{entries[0].Level, entries[1].Level, entries[2].Level})
	f := entries[0].ContextMap()
	assert.Equal(t, "echo", f["interface"])
	assert.Equal(t, "echo-1", f["worker"])
	assert.EqualValues(t, 1001, f["pid"])
	assert.Equal(t, "logs", f["method"])
	assert.Equal(t, time.Unix(1700000000, 5e8), f["worker_ts"].(time.Time))
	assert.Equal(t, "bob", f["user"])
	assert.EqualValues(t, int64(9007199254740993), f["n"])
	assert.InDelta(t, 1.5, f["x"], 0)
	assert.NotNil(t, f["obj"])

	var re *RemoteError
	require.ErrorAs(t, co.Call(ctx, "logerr", nil), &re)
	entries = obs.TakeAll()
	require.Len(t, entries, 1)
	assert.Equal(t, "before raising", entries[0].Message)
	assert.Equal(t, "logerr", entries[0].ContextMap()["method"])
}

func TestConcurrentOneShotCalls(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), MaxWorkers: 5})
	ctx := ctxTimeout(t, 20*time.Second)
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				nonce := g*1000 + i
				var r []int
				if !assert.NoError(t, c.Call(ctx, "echo", &r, nonce)) {
					return
				}
				assert.Equal(t, []int{nonce}, r)
			}
		}()
	}
	wg.Wait()
	st := c.Stats()
	assert.Equal(t, 0, st.OpenCheckouts)
	assert.EqualValues(t, 500, st.WaitCount)
	// taskd answered each request with its call's answer and released the worker itself:
	// the client sent nothing but the 500 requests.
	syncConn(t, c)
	assert.Len(t, d.received(wire.TCheckout), 500)
	assert.Empty(t, d.received(wire.TRelease))
	assert.Empty(t, d.received(wire.TAbort))
}

func TestOneShotAnswers(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr()})
	ctx := ctxTimeout(t, 5*time.Second)
	var r any
	require.NoError(t, c.Call(ctx, "", &r, 1))
	assert.Equal(t, map[string]any{"function": []any{1.0}}, r)

	err := c.Call(ctx, "raise", nil)
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "boom", re.Message)

	for method, want := range map[string]error{"lost": ErrWorkerLost, "timeout": ErrCallTimeout, "proto": ErrProtocol} {
		err := c.Call(ctx, method, nil)
		require.ErrorIs(t, err, want, method)
		assert.Contains(t, err.Error(), "echo."+method)
	}
	// Nothing is left waiting, and the client still works.
	require.NoError(t, c.Call(ctx, "echo", nil))
	assert.Equal(t, Stats{WaitCount: 6, WaitDuration: c.Stats().WaitDuration}, c.Stats())
}

func TestOneShotGivenUp(t *testing.T) {
	t.Run("during the call", func(t *testing.T) {
		d := newFakeDaemon(t)
		c := newClient(t, Config{Addr: d.addr()})
		err := c.Call(ctxTimeout(t, 30*time.Millisecond), "hang", nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "echo.hang")
		// The request is abandoned (taskd then kills the worker if the call runs); it
		// was never granted, so there is nothing to release or abort.
		req := d.received(wire.TCheckout)[0]
		assert.Equal(t, req.ID, d.waitReceived(wire.TAbandon, 1)[0].ID)
		syncConn(t, c)
		assert.Empty(t, d.received(wire.TAbort))
		assert.Empty(t, d.received(wire.TRelease))
		assert.Equal(t, Stats{WaitCount: 1, WaitDuration: c.Stats().WaitDuration}, c.Stats())
	})
	t.Run("answered after the caller gave up", func(t *testing.T) {
		d := newFakeDaemon(t)
		d.setHold(true)
		d.setHandler(func(_ *fakeConn, m wire.ClientMsg) bool { return m.T == wire.TAbandon }) // as if the answer was on its way
		c := newClient(t, Config{Addr: d.addr(), MaxWorkers: 1})
		err := c.Call(ctxTimeout(t, 30*time.Millisecond), "echo", nil, 1)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		req := d.received(wire.TCheckout)[0]
		require.True(t, req.Once)
		assert.Equal(t, req.ID, d.waitReceived(wire.TAbandon, 1)[0].ID)

		// The answer crossed the abandon: nobody waits for it, and it is dropped.
		d.grantNext()
		d.setHold(false)
		var r []int
		require.NoError(t, c.Call(ctxTimeout(t, 5*time.Second), "echo", &r, 2), "the MaxWorkers slot was given back")
		assert.Equal(t, []int{2}, r)
		assert.Empty(t, d.received(wire.TRelease))
	})
}

// syncConn makes a round trip on c's connection: the daemon has then received everything
// c sent before, and c has dispatched everything the daemon sent before it answered.
func syncConn(t *testing.T, c *Client) {
	t.Helper()
	_, err := c.Ping(ctxTimeout(t, 5*time.Second))
	require.NoError(t, err)
}

func TestErrorTexts(t *testing.T) {
	for _, err := range []error{ErrAborted, ErrWorkerLost, ErrCallTimeout, ErrReleased, ErrClosed,
		ErrUnknownInterface, ErrOverloaded, ErrUnavailable, ErrUnreachable, ErrShuttingDown, ErrProtocol} {
		assert.True(t, strings.HasPrefix(err.Error(), "client: "), err.Error())
	}
	require.ErrorIs(t, ErrCallTimeout, ErrWorkerLost)
	fn := &RemoteError{Interface: "i", Message: "m"}
	assert.Contains(t, fn.Error(), "i()")
}
