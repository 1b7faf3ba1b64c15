package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// multiYAML is the config of the daemons of the multi-daemon tests: interface "echo" of
// the lease worker (internal/taskdtest/leaseworker), 4 workers at most.
func multiYAML(t testing.TB) string {
	lw := taskdtest.Binary(t, "internal/taskdtest/leaseworker")
	return fmt.Sprintf("shutdown_grace: 10s\ninterfaces:\n  echo:\n    command: [%q]\n    min_idle: 2\n    max_workers: 4\n", lw)
}

// multiDir is a short directory for a daemon that is restarted on the same socket; it is
// removed when the test ends.
func multiDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "tdm")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startMulti starts n daemons, each in a directory of its own (dirs), and a Client of all.
func startMulti(t *testing.T, n int, cfg Config) ([]*taskdtest.Daemon, []string, *Client) {
	t.Helper()
	yaml := multiYAML(t)
	var ds []*taskdtest.Daemon
	var dirs []string
	for range n {
		dir := multiDir(t)
		dirs = append(dirs, dir)
		ds = append(ds, taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: dir, Wait: true}))
	}
	for _, d := range ds {
		cfg.Addrs = append(cfg.Addrs, d.Addr)
	}
	cfg.Interface = "echo"
	return ds, dirs, newClient(t, cfg)
}

// daemonOf returns the index of the daemon whose worker pid is, or -1.
func daemonOf(ds []*taskdtest.Daemon, pid int) int {
	for i, d := range ds {
		if slices.Contains(d.Workers(), pid) {
			return i
		}
	}
	return -1
}

// TestMultiSpread: under steady load from many goroutines, checkouts spread over three
// daemons within ±25% of an even share, counted by where their workers run (and the
// Client's own per-daemon rows agree).
func TestMultiSpread(t *testing.T) {
	ds, _, c := startMulti(t, 3, Config{})
	const goroutines, each = 9, 40
	per, _ := spreadLoad(t, c, ds, goroutines, each, 2)
	total := goroutines * each
	st := c.Stats()
	require.Len(t, st.Daemons, 3)
	assert.EqualValues(t, total, st.WaitCount, "one wait per checkout")
	for i := range ds {
		share := float64(per[i]) / (float64(total) / 3)
		assert.InDelta(t, 1, share, 0.25, "daemon %d served %d of %d checkouts (%v)", i, per[i], total, per)
		assert.Equal(t, ds[i].Addr, st.Daemons[i].Addr)
		assert.Equal(t, int64(per[i]), st.Daemons[i].Checkouts, "Stats row of daemon %d", i)
		assert.True(t, st.Daemons[i].Connected)
		assert.Zero(t, st.Daemons[i].Errors)
	}
	assert.Zero(t, st.OpenCheckouts)
}

// TestMultiKillOne: SIGKILL one daemon of three while checkouts are held on each: only
// those held on it fail (ErrWorkerLost), the others go on, new checkouts and one-shot
// calls all succeed on the two left; the daemon restarted on the same socket is used
// again.
func TestMultiKillOne(t *testing.T) {
	ds, dirs, c := startMulti(t, 3, Config{})
	ctx := context.Background()
	var held []*Checkout
	on := make([]int, 3)
	for range 9 {
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		held = append(held, co)
		on[daemonOf(ds, co.Worker().PID)]++
	}
	require.NotZero(t, on[0], "no checkout on daemon 0: %v", on)
	victim := ds[0]
	workers := victim.Workers()
	require.NoError(t, victim.Signal(syscall.SIGKILL))
	<-victim.Exited()
	taskdtest.RequireGone(t, workers, 10*time.Second)

	lost := 0
	for _, co := range held {
		var r []any
		err := co.Call(ctx, "echo", &r, 1)
		if slices.Contains(workers, co.Worker().PID) {
			require.ErrorIs(t, err, ErrWorkerLost)
			lost++
		} else {
			require.NoError(t, err, "a checkout on a daemon still up")
		}
		co.Release()
	}
	assert.Equal(t, on[0], lost)

	waits := c.Stats().WaitCount
	for i := range 30 {
		co, err := c.Checkout(ctx)
		require.NoError(t, err, "checkout %d after the kill", i)
		assert.NotEqual(t, 0, daemonOf(ds, co.Worker().PID))
		co.Release()
		var r []any
		require.NoError(t, c.Call(ctx, "echo", &r, i), "one-shot call %d after the kill", i)
	}
	st := c.Stats()
	assert.Equal(t, waits+60, st.WaitCount, "one wait per checkout and per call, however many daemons each tried")
	assert.False(t, st.Daemons[0].Connected)
	assert.NotZero(t, st.Daemons[0].Errors, "the failed connects are counted")

	// Restarted on the same socket: used again once its ban ends.
	ds[0] = taskdtest.StartWith(t, multiYAML(t), taskdtest.Options{Dir: dirs[0], Wait: true})
	before := c.Stats().Daemons[0].Checkouts
	require.Eventually(t, func() bool {
		co, err := c.Checkout(ctx)
		if err != nil {
			t.Errorf("checkout after the restart: %v", err)
			return true
		}
		co.Release()
		return c.Stats().Daemons[0].Checkouts > before
	}, 20*time.Second, 20*time.Millisecond)
}

// holdOn checks out until the Client holds need[i] checkouts on daemon i, releasing the
// others; it returns those held, by daemon. (A checkout released goes on with a short
// pause: the daemons' spare counts steer the next one, and the figures age.)
func holdOn(t *testing.T, c *Client, ds []*taskdtest.Daemon, need []int) [][]*Checkout {
	t.Helper()
	held := make([][]*Checkout, len(ds))
	for range 300 {
		done := true
		for i := range need {
			done = done && len(held[i]) == need[i]
		}
		if done {
			return held
		}
		co, err := c.Checkout(context.Background())
		require.NoError(t, err)
		if i := daemonOf(ds, co.Worker().PID); len(held[i]) < need[i] {
			held[i] = append(held[i], co)
		} else {
			co.Release()
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatalf("could not place checkouts %v", need)
	return nil
}

// TestMultiDrain: a daemon whose interface an admin drained gets no new checkouts (the
// others take them, with no failure), while the checkouts held on it finish normally.
// It holds the fewest checkouts, so that the balancer would pick it if it could.
func TestMultiDrain(t *testing.T) {
	ds, _, c := startMulti(t, 3, Config{})
	ctx := context.Background()
	placed := holdOn(t, c, ds, []int{1, 2, 2})
	held := placed[0]
	defer func() {
		for _, cos := range placed[1:] {
			for _, co := range cos {
				co.Release()
			}
		}
	}()

	admin := newClient(t, Config{Addr: ds[0].Addr})
	_, err := admin.Drain(ctx, "echo")
	require.NoError(t, err)

	for i := range 30 {
		co, err := c.Checkout(ctx)
		require.NoError(t, err, "checkout %d after the drain", i)
		assert.NotEqual(t, 0, daemonOf(ds, co.Worker().PID), "a new checkout on the drained daemon")
		co.Release()
	}
	assert.NotZero(t, c.Stats().Daemons[0].Errors, "the drained daemon was tried, and refused")
	for _, co := range held {
		var r []any
		require.NoError(t, co.Call(ctx, "echo", &r, "still here"))
		co.Release()
	}
	_, err = admin.Resume(ctx, "echo")
	require.NoError(t, err)
}

// TestMultiShutdown: a daemon that got SIGTERM (it drains for shutdown_grace) refuses new
// checkouts; they go to the other daemon without failing, and the checkout held on it
// still works until released.
func TestMultiShutdown(t *testing.T) {
	ds, _, c := startMulti(t, 2, Config{})
	ctx := context.Background()
	placed := holdOn(t, c, ds, []int{1, 2})
	held := placed[0][0]
	defer func() {
		for _, co := range placed[1] {
			co.Release()
		}
	}()
	admin := newClient(t, Config{Addr: ds[0].Addr})
	pong, err := admin.Ping(ctx)
	require.NoError(t, err)
	require.False(t, pong.Draining)
	require.NoError(t, ds[0].Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool {
		pong, err := admin.Ping(ctx)
		return err == nil && pong.Draining
	}, 10*time.Second, 5*time.Millisecond, "pong says draining after SIGTERM")
	for i := range 20 {
		co, err := c.Checkout(ctx)
		require.NoError(t, err, "checkout %d after SIGTERM", i)
		assert.Equal(t, 1, daemonOf(ds, co.Worker().PID))
		co.Release()
	}
	var r []any
	require.NoError(t, held.Call(ctx, "echo", &r, 1))
	held.Release()
	<-ds[0].Exited()
}

// TestMultiAllDown: with every daemon down, a checkout fails at its deadline with
// ErrUnreachable (the bans never make it fail sooner), and is served once one is up.
func TestMultiAllDown(t *testing.T) {
	dirs := []string{multiDir(t), multiDir(t)}
	c := newClient(t, Config{Interface: "echo", Addrs: []string{"unix:" + dirs[0] + "/taskd.sock", "unix:" + dirs[1] + "/taskd.sock"}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err := c.Checkout(ctx)
	cancel()
	require.ErrorIs(t, err, ErrUnreachable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	for _, row := range c.Stats().Daemons {
		assert.NotZero(t, row.Errors)
	}

	done := make(chan error, 1)
	go func() {
		co, err := c.Checkout(context.Background())
		if err == nil {
			co.Release()
		}
		done <- err
	}()
	taskdtest.StartWith(t, multiYAML(t), taskdtest.Options{Dir: dirs[1], Wait: true})
	require.NoError(t, <-done)
}

// TestMultiMaxWorkers: Config.MaxWorkers caps the checkouts of all daemons together,
// first come first served, and a Release hands the slot to the next waiter.
func TestMultiMaxWorkers(t *testing.T) {
	ds, _, c := startMulti(t, 2, Config{MaxWorkers: 2})
	ctx := context.Background()
	a, err := c.Checkout(ctx)
	require.NoError(t, err)
	b, err := c.Checkout(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, daemonOf(ds, a.Worker().PID), daemonOf(ds, b.Worker().PID), "one on each")

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = c.Checkout(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "MaxWorkers=2")
	var r []any
	short, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
	err = c.Call(short, "echo", &r, 1)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "a one-shot call takes a slot too")

	got := make(chan *Checkout, 1)
	go func() {
		co, err := c.Checkout(ctx)
		assert.NoError(t, err)
		got <- co
	}()
	require.Eventually(t, func() bool { return c.Stats().Waiting == 1 }, 5*time.Second, time.Millisecond)
	a.Release()
	a.Release() // idempotent: gives the slot back once
	third := <-got
	require.NotNil(t, third)
	require.NoError(t, third.Call(ctx, "echo", &r, 2))
	assert.Equal(t, 2, c.Stats().OpenCheckouts)
	short, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = c.Checkout(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded, "the second Release of a gave no second slot back")
	b.Release()
	third.Release()
	require.NoError(t, c.Call(ctx, "echo", &r, 3))
	assert.Zero(t, c.Stats().OpenCheckouts)
}

// TestMultiAdmin: Ping goes to the first daemon that answers; per-daemon requests say to
// use a Client of that daemon.
func TestMultiAdmin(t *testing.T) {
	d := taskdtest.Start(t, multiYAML(t))
	down := "unix:" + multiDir(t) + "/taskd.sock"
	c := newClient(t, Config{Interface: "echo", Addrs: []string{down, d.Addr}})
	ctx := context.Background()
	_, err := c.Ping(ctx)
	require.NoError(t, err)
	st, err := c.DaemonStatus(ctx)
	require.NoError(t, err)
	assert.NotEmpty(t, st.Interfaces)
	_, err = c.Drain(ctx, "echo")
	require.ErrorIs(t, err, ErrPerDaemon)
	assert.Contains(t, err.Error(), "Config.Addr")
	_, err = c.Logs(ctx, "echo")
	require.ErrorIs(t, err, ErrPerDaemon)
	_, err = c.Reload(ctx)
	require.ErrorIs(t, err, ErrPerDaemon)
	assert.Equal(t, down+","+d.Addr, c.Addr())
}

// TestMultiConfig: bad Addrs give clear errors; one address is the same as Addr.
func TestMultiConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Addr: "unix:/a.sock", Addrs: []string{"unix:/b.sock"}}, "both set"},
		{Config{Addrs: []string{"unix:/a.sock", "unix:/a.sock"}}, "listed twice"},
		{Config{Addrs: []string{""}}, "Config.Addrs[0] is empty"},
		{Config{Addrs: []string{"unix:/a.sock", "http://x"}}, "want unix:"},
		{Config{Addrs: []string{"dns://name"}}, "want dns://name:port"},
		{Config{Addrs: []string{"dns://name:0"}}, "want dns://name:port"},
		{Config{Addrs: []string{"dns+srv://name"}}, "want dns+srv://_service._proto.name"},
		{Config{Addrs: []string{"unix:/a.sock", "unix:/b.sock"}, MaxWorkers: -1}, "MaxWorkers"},
	} {
		_, err := New(tc.cfg)
		require.Error(t, err, "%+v", tc.cfg)
		assert.Contains(t, err.Error(), tc.want)
	}
	c, err := New(Config{Addrs: []string{"unix:/a.sock"}, Interface: "echo"})
	require.NoError(t, err)
	assert.Nil(t, c.multi)
	assert.Equal(t, "unix:/a.sock", c.Addr())
	require.NoError(t, c.Close())
	c, err = New(Config{Addrs: []string{"dns://localhost:1"}, Interface: "echo"})
	require.NoError(t, err)
	require.NotNil(t, c.multi)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close())
	_, err = c.Checkout(context.Background())
	require.True(t, errors.Is(err, ErrClosed), "%v", err)
}

// TestMultiIdempotentMoves: a one-shot call marked safe to repeat (CallIdempotent) whose
// daemon is SIGKILLed while it runs is run again, on the daemon left; a plain Call in the
// same spot fails with ErrWorkerLost and is not resent.
func TestMultiIdempotentMoves(t *testing.T) {
	for _, safe := range []bool{true, false} {
		t.Run(fmt.Sprintf("idempotent=%v", safe), func(t *testing.T) {
			ds, _, c := startMulti(t, 2, Config{WarmFor: -1})
			ctx := context.Background()
			admins := []*Client{newClient(t, Config{Addr: ds[0].Addr}), newClient(t, Config{Addr: ds[1].Addr})}
			errc := make(chan error, 1)
			go func() {
				var ms int
				if safe {
					errc <- c.CallIdempotent(ctx, "sleep", &ms, 2000)
				} else {
					errc <- c.Call(ctx, "sleep", &ms, 2000)
				}
			}()
			victim := -1
			require.Eventually(t, func() bool {
				for i, a := range admins {
					st, err := a.DaemonStatus(ctx)
					if err == nil && len(st.Interfaces) == 1 && st.Interfaces[0].Busy > 0 {
						victim = i
						return true
					}
				}
				return false
			}, 10*time.Second, 5*time.Millisecond, "the call runs on a daemon")
			before, err := admins[1-victim].DaemonStatus(ctx)
			require.NoError(t, err)
			require.NoError(t, ds[victim].Signal(syscall.SIGKILL))
			err = <-errc
			after, err2 := admins[1-victim].DaemonStatus(ctx)
			require.NoError(t, err2)
			if safe {
				require.NoError(t, err, "run again on the other daemon")
				assert.EqualValues(t, 1, c.Stats().Retries)
				assert.Equal(t, before.Interfaces[0].Checkouts+1, after.Interfaces[0].Checkouts, "the other daemon ran it")
			} else {
				require.ErrorIs(t, err, ErrWorkerLost)
				assert.Zero(t, c.Stats().Retries)
				assert.Equal(t, before.Interfaces[0].Checkouts, after.Interfaces[0].Checkouts, "not resent to the other daemon")
			}
		})
	}
}
