package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// warmStatus returns the checkouts taskd has granted on interface iface so far, and the
// pid of its only worker (0 if it has not exactly one).
func warmStatus(t *testing.T, c *Client, iface string) (checkouts uint64, pid int) {
	t.Helper()
	st, err := c.DaemonStatus(context.Background())
	require.NoError(t, err)
	for _, is := range st.Interfaces {
		if is.Name == iface {
			if len(is.Workers) == 1 {
				pid = is.Workers[0].PID
			}
			return is.Checkouts, pid
		}
	}
	t.Fatalf("no interface %q", iface)
	return 0, 0
}

// TestWarmLeaseServesOneShotCalls: one-shot calls reuse one warm lease (one checkout in
// taskd), the worker's done hook runs between them and once more when the lease ends,
// and the lease goes back to taskd after WarmFor idle.
func TestWarmLeaseServesOneShotCalls(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease", WarmFor: 300 * time.Millisecond})
	before, _ := warmStatus(t, c, "lease")
	for want := range 4 {
		var dones int
		require.NoError(t, c.Call(ctx, "dones", &dones))
		assert.Equal(t, 2*want, dones, "a done hook before each call but the first")
		var lease int
		require.NoError(t, c.Call(ctx, "lease", &lease))
		assert.NotZero(t, lease, "the call came over a lease")
	}
	after, _ := warmStatus(t, c, "lease")
	assert.Equal(t, before+1, after, "eight calls, one checkout")
	assert.Equal(t, 1, c.Stats().WarmLeases)
	assert.Zero(t, c.Stats().OpenCheckouts)

	// Idle for WarmFor: released, and its last hook runs at the lease's end.
	require.Eventually(t, func() bool { return c.Stats().WarmLeases == 0 }, 10*time.Second, 10*time.Millisecond)
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	var dones int
	require.NoError(t, co.Call(ctx, "dones", &dones))
	assert.Equal(t, 8, dones, "one hook per one-shot call")
	co.Release()
}

// TestWarmLeaseReclaimed: a warm lease that another checkout needs (max_workers: 1)
// comes back to taskd at once if idle, and after its call if one runs; that call is not
// disturbed. Its client's next call waits its turn like anyone's, and for a while after a
// reclaim its one-shot calls ask for no warm lease (the pool is short of workers).
func TestWarmLeaseReclaimed(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	const warmFor = 500 * time.Millisecond
	a := newClient(t, Config{Addr: d.Addr, Interface: "lease", WarmFor: warmFor})
	b := newClient(t, Config{Addr: d.Addr, Interface: "lease"})

	require.NoError(t, a.Call(ctx, "echo", nil))
	require.Equal(t, 1, a.Stats().WarmLeases)
	start := time.Now()
	co, err := b.Checkout(ctx)
	require.NoError(t, err, "the idle warm lease was reclaimed")
	t.Logf("checkout with the only worker warm elsewhere: %v", time.Since(start))
	require.Eventually(t, func() bool { return a.Stats().WarmLeases == 0 }, 5*time.Second, time.Millisecond)

	// a's next one-shot call waits for b's release; a keeps the worker warm again.
	done := make(chan error, 1)
	go func() { done <- a.Call(ctx, "echo", nil) }()
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("a's call did not wait for the worker: %v", err)
	default:
	}
	co.Release()
	require.NoError(t, <-done)
	require.Equal(t, 0, a.Stats().WarmLeases, "cooling down after the reclaim: a plain one-shot call")
	time.Sleep(warmFor)
	require.NoError(t, a.Call(ctx, "echo", nil))
	require.Equal(t, 1, a.Stats().WarmLeases, "warm again")

	// Reclaimed while its call runs: the call finishes, then the lease goes back.
	slow := make(chan error, 1)
	go func() {
		var ms int
		slow <- a.Call(ctx, "sleep", &ms, 300)
	}()
	require.Eventually(t, func() bool {
		cos, err := a.Checkouts(ctx, "lease")
		return err == nil && len(cos) == 1 && cos[0].Method == "sleep"
	}, 5*time.Second, time.Millisecond)
	co, err = b.Checkout(ctx)
	require.NoError(t, err)
	require.NoError(t, <-slow, "a reclaim does not interrupt the running call")
	assert.Zero(t, a.Stats().WarmLeases)
	co.Release()
}

// TestWarmLeaseGivenBackForThePool: the pool wants a warm lease's worker back when an
// admin retires it, and when the interface drains: taskd reclaims it without waiting for
// WarmFor.
func TestWarmLeaseGivenBackForThePool(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease", WarmFor: time.Hour})
	var pid int
	require.NoError(t, c.Call(ctx, "pid", &pid))
	cos, err := c.Checkouts(ctx, "lease")
	require.NoError(t, err)
	require.Len(t, cos, 1)
	assert.True(t, cos[0].Warm && cos[0].Direct, "%+v", cos[0])
	_, err = c.RetireWorker(ctx, cos[0].Worker)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Stats().WarmLeases == 0 }, 5*time.Second, time.Millisecond)
	var pid2 int
	require.NoError(t, c.Call(ctx, "pid", &pid2))
	assert.NotEqual(t, pid, pid2, "retired once given back")

	_, err = c.Drain(ctx, "lease")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.Stats().WarmLeases == 0 }, 5*time.Second, time.Millisecond)
	require.Error(t, c.Call(ctx, "pid", nil), "draining: new checkouts are refused")
}

// TestWarmLeaseNotKept: a lease is not kept after a call that raised (its worker is
// retired, as after a relayed one-shot error), nor by a Client with WarmFor < 0 or
// DirectOff, nor for a worker that takes no leases; and a Checkout that needs the
// MaxWorkers slot of an idle warm lease gets it at once.
func TestWarmLeaseNotKept(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease", WarmFor: time.Hour, MaxWorkers: 1})
	var pid, pid2 int
	require.NoError(t, c.Call(ctx, "pid", &pid))
	var re *RemoteError
	require.True(t, errors.As(c.Call(ctx, "fail", nil, "boom"), &re))
	assert.Zero(t, c.Stats().WarmLeases)
	require.NoError(t, c.Call(ctx, "pid", &pid2))
	assert.NotEqual(t, pid, pid2, "the worker that raised was retired")

	start := time.Now()
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 10*time.Second, "not held up by the idle warm lease")
	co.Release()

	for _, cfg := range []Config{
		{Addr: d.Addr, Interface: "lease", WarmFor: -1},
		{Addr: d.Addr, Interface: "lease", Direct: DirectOff},
		{Addr: d.Addr, Interface: "nolease"},
		{Addr: d.Addr, Interface: "off"},
	} {
		cc := newClient(t, cfg)
		before, _ := warmStatus(t, cc, cfg.Interface)
		for range 3 {
			require.NoError(t, cc.Call(ctx, "echo", nil))
		}
		after, _ := warmStatus(t, cc, cfg.Interface)
		assert.Equal(t, before+3, after, "%+v: a checkout per call", cfg)
		assert.Zero(t, cc.Stats().WarmLeases)
	}
}

// TestWarmLeaseClose: Close gives the warm leases back; taskd pools their worker.
func TestWarmLeaseClose(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	c, err := New(Config{Addr: d.Addr, Interface: "lease", WarmFor: time.Hour})
	require.NoError(t, err)
	var pid int
	require.NoError(t, c.Call(ctx, "pid", &pid))
	require.NoError(t, c.Close())
	require.ErrorIs(t, c.Call(ctx, "pid", nil), ErrClosed)

	c2 := newClient(t, Config{Addr: d.Addr, Interface: "lease", Direct: DirectOff})
	var pid2 int
	require.NoError(t, c2.Call(ctx, "pid", &pid2))
	assert.Equal(t, pid, pid2, "pooled, not retired")
}

// TestWarmLeaseReclaimedAgain: a client that does not act on taskd's reclaim (here one
// speaking the protocol by hand, which ignores it) is asked again while another checkout
// waits, each reclaim after the grant it names; once it releases, the waiter is served.
func TestWarmLeaseReclaimedAgain(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	nc, err := net.Dial("unix", d.Socket)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(20*time.Second)))
	sc := bufio.NewScanner(nc)
	recv := func() map[string]any {
		require.True(t, sc.Scan(), "no message from taskd: %v", sc.Err())
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
		return m
	}
	// The lease's socketpair end comes with the grant and is dropped unread: this client
	// makes no call on it.
	_, err = nc.Write([]byte(`{"t":"checkout","id":1,"iface":"lease","once":true,"direct":true,"warm":true,"m":"echo","a":[]}` + "\n"))
	require.NoError(t, err)
	g := recv()
	require.Equal(t, "granted", g["t"], "%v", g)
	require.Equal(t, true, g["warm"], "%v", g)
	co := g["co"]

	b := newClient(t, Config{Addr: d.Addr, Interface: "lease"})
	got := make(chan error, 1)
	go func() {
		co, err := b.Checkout(context.Background())
		if err == nil {
			co.Release()
		}
		got <- err
	}()
	first := recv()
	require.Equal(t, map[string]any{"t": "reclaim", "co": co}, first)
	asked := time.Now()
	again := recv()
	require.Equal(t, map[string]any{"t": "reclaim", "co": co}, again, "asked again")
	assert.GreaterOrEqual(t, time.Since(asked), reclaimAgainMin, "not before the client had time to give it back")
	select {
	case err := <-got:
		t.Fatalf("the waiter was served while the worker was held: %v", err)
	default:
	}
	_, err = nc.Write([]byte(fmt.Sprintf(`{"t":"release","co":%v}`, co) + "\n"))
	require.NoError(t, err)
	require.NoError(t, <-got, "served once the warm lease came back")
}

// reclaimAgainMin is a lower bound of taskd's interval between two reclaims of one lease.
const reclaimAgainMin = 900 * time.Millisecond
