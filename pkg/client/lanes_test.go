package client

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

func (d *fakeDaemon) numConns() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.conns)
}

// holdCheckouts checks out n workers at once and returns them, failing the test if any
// checkout fails.
func holdCheckouts(t *testing.T, c *Client, n int) []*Checkout {
	t.Helper()
	ctx := ctxTimeout(t, 10*time.Second)
	cos := make([]*Checkout, n)
	var wg sync.WaitGroup
	for i := range cos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co, err := c.Checkout(ctx)
			if assert.NoError(t, err) {
				cos[i] = co
			}
		}()
	}
	wg.Wait()
	for _, co := range cos {
		require.NotNil(t, co)
	}
	return cos
}

func TestConnsGrowWithLoad(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), Conns: 3})

	// Two checkouts at a time fit on one connection.
	for _, co := range holdCheckouts(t, c, 2) {
		co.Release()
	}
	assert.Equal(t, 1, d.numConns())

	// Seven call for all three lanes; every checkout's calls travel on its own connection
	// (the fake answers on the connection a call came on) and are answered.
	cos := holdCheckouts(t, c, 7)
	require.Eventually(t, func() bool { return d.numConns() == 3 }, 5*time.Second, time.Millisecond)
	ctx := ctxTimeout(t, 10*time.Second)
	// Checkouts made once the lanes are up spread over them.
	more := holdCheckouts(t, c, 6)
	byConn := map[*conn]int{}
	for _, co := range append(cos, more...) {
		var got []string
		require.NoError(t, co.Call(ctx, "echo", &got, "x"))
		assert.Equal(t, []string{"x"}, got)
		byConn[co.cn]++
	}
	assert.Len(t, byConn, 3, "checkouts spread over the connections")
	// Each connection greeted taskd once, before anything else.
	assert.Len(t, d.received(wire.THello), 3)
	for _, co := range append(cos, more...) {
		co.Release()
	}
	assert.Len(t, d.waitReceived(wire.TRelease, 15), 15)
	assert.Equal(t, 0, c.Stats().OpenCheckouts)

	// One-shot calls and admin requests go over any of them.
	for range 6 {
		var got []string
		require.NoError(t, c.Call(ctx, "echo", &got, "y"))
		assert.Equal(t, []string{"y"}, got)
	}
	_, err := c.Ping(ctx)
	require.NoError(t, err)
}

func TestConnsOneKeepsOneConnection(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), Conns: 1})
	for _, co := range holdCheckouts(t, c, 8) {
		co.Release()
	}
	assert.Equal(t, 1, d.numConns())
	_, err := New(Config{Addr: d.addr(), Conns: -1})
	require.ErrorContains(t, err, "Config.Conns")
}

// A daemon restart drops every connection: checkouts waiting on any of them are sent
// again on the next, and served without an error; held ones fail with ErrWorkerLost.
func TestConnsRestartInvisible(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), Conns: 4})
	held := holdCheckouts(t, c, 9)
	require.Eventually(t, func() bool { return d.numConns() == 4 }, 5*time.Second, time.Millisecond)

	d.setHold(true)
	const n = 6
	ctx := ctxTimeout(t, 10*time.Second)
	got := make(chan *Checkout, n)
	for range n {
		go func() {
			co, err := c.Checkout(ctx)
			assert.NoError(t, err)
			got <- co
		}()
	}
	require.Eventually(t, func() bool { return d.numWaiting() == n }, 5*time.Second, time.Millisecond)
	d.setHold(false)
	d.dropConns()
	for range n {
		co := <-got
		require.NotNil(t, co)
		require.NoError(t, co.Call(ctx, "echo", nil))
		co.Release()
	}
	for _, co := range held {
		require.ErrorIs(t, co.Call(ctx, "echo", nil), ErrWorkerLost)
		co.Release()
	}
	assert.Equal(t, 0, c.Stats().OpenCheckouts)
}

// A lane lost while others are up is dialled again while the load still calls for it,
// lane 0 included; the checkouts it carried fail, the others go on.
func TestConnsLaneRedialled(t *testing.T) {
	d := newFakeDaemon(t)
	c := newClient(t, Config{Addr: d.addr(), Conns: 2})
	cos := holdCheckouts(t, c, 3)
	live := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.live
	}
	require.Eventually(t, func() bool { return live() == 2 }, 5*time.Second, time.Millisecond)
	c.mu.Lock()
	lost := c.lanes[0].cn
	c.mu.Unlock()
	lost.nc.Close()
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lanes[0].cn != nil && c.lanes[0].cn != lost
	}, 5*time.Second, time.Millisecond)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, co := range cos {
		if co.cn == lost {
			require.ErrorIs(t, co.Call(ctx, "echo", nil), ErrWorkerLost)
		} else {
			require.NoError(t, co.Call(ctx, "echo", nil))
		}
		co.Release()
	}
}
