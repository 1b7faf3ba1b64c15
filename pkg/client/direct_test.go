package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// leaseDaemon starts taskd with interfaces of the minimal lease-speaking worker
// (internal/taskdtest/leaseworker): "lease" (direct leases on), "nolease" (the worker
// does not announce leases), "off" (direct: false), each with extra, and a TCP listener
// too; it returns the daemon and the TCP address.
func leaseDaemon(t testing.TB, extra string) (*taskdtest.Daemon, string) {
	t.Helper()
	return leaseDaemonWith(t, extra, taskdtest.Options{Wait: true})
}

// leaseDaemonWith is leaseDaemon with taskd started with o.
func leaseDaemonWith(t testing.TB, extra string, o taskdtest.Options) (*taskdtest.Daemon, string) {
	t.Helper()
	lw := taskdtest.Binary(t, "internal/taskdtest/leaseworker")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	tcp := "tcp://" + ln.Addr().String()
	ln.Close()
	t.Cleanup(func() { f.Close() })
	iface := func(name, more string) string {
		s := fmt.Sprintf("  %s:\n    command: [%q]\n    min_idle: 1\n    max_workers: 1\n", name, lw)
		for _, l := range strings.Split(strings.TrimSpace(extra+"\n"+more), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				s += "    " + l + "\n"
			}
		}
		return s
	}
	d := taskdtest.StartWith(t, "interfaces:\n"+iface("lease", "")+iface("nolease", `env: {LEASEWORKER_NO_LEASE: "1"}`)+
		iface("off", "direct: false"), taskdtest.Options{Wait: true, Sockets: []*os.File{f}, Cgroup: o.Cgroup})
	return d, tcp
}

// allIdle waits until every interface has one worker, idle (no spawn under way).
func allIdle(t *testing.T, c *Client) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, err := c.DaemonStatus(context.Background())
		if err != nil {
			return false
		}
		for _, is := range st.Interfaces {
			if len(is.Workers) != 1 || is.Workers[0].State != "idle" {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
}

func fdCount(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestDirectAndRelayAlike runs one scenario on a direct lease and on each way of falling
// back to the relay: the results and errors are the same, and only the first is direct.
func TestDirectAndRelayAlike(t *testing.T) {
	d, tcp := leaseDaemon(t, "")
	ctx := context.Background()
	type outcome struct {
		echo        string
		remote      string
		aborted     bool
		after       string
		lease, pool bool
	}
	var want *outcome
	for _, tc := range []struct {
		name   string
		cfg    Config
		direct bool
	}{
		{"direct", Config{Addr: d.Addr, Interface: "lease"}, true},
		{"client says relay", Config{Addr: d.Addr, Interface: "lease", Direct: DirectOff}, false},
		{"worker without leases", Config{Addr: d.Addr, Interface: "nolease"}, false},
		{"interface direct false", Config{Addr: d.Addr, Interface: "off"}, false},
		{"tcp", Config{Addr: tcp, Interface: "lease"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, tc.cfg)
			co, err := c.Checkout(ctx)
			require.NoError(t, err)
			assert.Equal(t, tc.direct, co.pair != nil, "direct lease")
			var o outcome
			var echo []any
			require.NoError(t, co.Call(ctx, "echo", &echo, 1, "a", map[string]any{"x": nil}))
			o.echo = fmt.Sprint(echo)
			var leaseNo int
			require.NoError(t, co.Call(ctx, "lease", &leaseNo))
			o.lease = leaseNo > 0
			assert.Equal(t, tc.direct, o.lease, "the worker saw the call on a lease")
			// Pipelined: a failing call, and one made before its error was seen.
			p1, p2 := co.Go("fail"), co.Go("echo", 2)
			err = p1.Wait(ctx, nil)
			var re *RemoteError
			require.ErrorAs(t, err, &re)
			o.remote = re.Type + ": " + re.Message
			err = p2.Wait(ctx, nil)
			o.aborted = errors.Is(err, ErrAborted)
			require.NoError(t, co.Call(ctx, "echo", &echo, "after"))
			o.after = fmt.Sprint(echo)
			co.Release()
			assert.ErrorIs(t, co.Call(ctx, "echo", nil), ErrReleased)
			// The err retired the worker (no KeepWorkerAfterError): the next is another.
			co2, err := c.Checkout(ctx)
			require.NoError(t, err)
			o.pool = co2.Worker().PID != co.Worker().PID
			co2.Release()
			o.lease = false // differs by design; checked above
			if want == nil {
				want = &o
				return
			}
			assert.Equal(t, *want, o)
		})
	}
	require.NotNil(t, want)
	assert.Equal(t, outcome{echo: "[1 a map[x:<nil>]]", remote: "TestError: it failed as asked", aborted: true, after: "[after]", pool: true}, *want)
}

// TestDirectLeaseLifecycle: every checkout gets a new pair; the done hook runs at
// release, before the worker serves anyone else; an old pair reaches nothing; status
// shows a leased call; bye on control retires; nothing leaks.
func TestDirectLeaseLifecycle(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease"})
	// Warm up the connection so that its descriptors are counted in before.
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	co.Release()
	allIdle(t, c)
	before, daemonBefore := fdCount(t), daemonFDs(t, d.PID())

	var pids []int
	var dones []int
	var kept *os.File
	for i := range 3 {
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		require.NotNil(t, co.pair, "checkout %d is direct", i)
		var pid, n int
		require.NoError(t, co.Call(ctx, "pid", &pid))
		require.NoError(t, co.Call(ctx, "dones", &n))
		pids, dones = append(pids, pid), append(dones, n)
		if i == 0 {
			kept, err = co.pair.nc.(*net.UnixConn).File() // a client that keeps its end
			require.NoError(t, err)
		}
		if i == 1 {
			// A running leased call shows in taskctl checkouts and status.
			p := co.Go("sleep", 400)
			require.Eventually(t, func() bool {
				list, err := c.Checkouts(ctx, "lease")
				return err == nil && len(list) == 1 && list[0].Direct && list[0].Method == "sleep" && list[0].CallRunning > 0
			}, 5*time.Second, 10*time.Millisecond)
			st, err := c.DaemonStatus(ctx)
			require.NoError(t, err)
			found := false
			for _, is := range st.Interfaces {
				for _, w := range is.Workers {
					found = found || (w.PID == pid && w.Method == "sleep")
				}
			}
			assert.True(t, found, "status shows the leased call's method")
			require.NoError(t, p.Wait(ctx, nil))
		}
		co.Release()
	}
	assert.Equal(t, []int{pids[0], pids[0], pids[0]}, pids, "one worker, pooled between checkouts")
	assert.Equal(t, []int{dones[0], dones[0] + 1, dones[0] + 2}, dones, "the done hook ran at each release")

	// The first pair's kept end reaches nothing: the worker closed its end at release.
	_, _ = kept.Write([]byte(`{"t":"call","id":1,"m":"pid","a":[]}` + "\n"))
	buf := make([]byte, 64)
	n, err := kept.Read(buf)
	assert.Equal(t, 0, n)
	assert.Error(t, err, "EOF: the worker's end is closed")
	kept.Close()

	// bye on the control channel retires the worker after this checkout.
	co, err = c.Checkout(ctx)
	require.NoError(t, err)
	require.NoError(t, co.Call(ctx, "bye", nil))
	co.Release()
	co, err = c.Checkout(ctx)
	require.NoError(t, err)
	var pid int
	require.NoError(t, co.Call(ctx, "pid", &pid))
	assert.NotEqual(t, pids[0], pid, "bye on control retired the worker")
	co.Release()

	allIdle(t, c)
	assert.Equal(t, before, fdCount(t), "client descriptors")
	if !assert.Eventually(t, func() bool { return daemonFDs(t, d.PID()) == daemonBefore }, 5*time.Second, 20*time.Millisecond,
		"taskd descriptors: %d before", daemonBefore) {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.PID()))
		for _, e := range ents {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", d.PID(), e.Name()))
			t.Logf("fd %s → %s", e.Name(), l)
		}
	}
}

// TestDirectWorkerKilled: a worker killed while leased (from outside, and by taskctl
// kill) fails the checkout with ErrWorkerLost, in flight and after.
func TestDirectWorkerKilled(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease"})

	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	require.NotNil(t, co.pair)
	var pid int
	require.NoError(t, co.Call(ctx, "pid", &pid))
	p := co.Go("sleep", 10000)
	time.Sleep(50 * time.Millisecond)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	err = p.Wait(ctx, nil)
	require.ErrorIs(t, err, ErrWorkerLost)
	assert.ErrorIs(t, co.Call(ctx, "echo", nil), ErrWorkerLost, "sticky")
	co.Release()

	co, err = c.Checkout(ctx)
	require.NoError(t, err)
	require.NotNil(t, co.pair)
	msg, err := c.KillWorker(ctx, co.Worker().ID)
	require.NoError(t, err, msg)
	err = co.Call(ctx, "sleep", nil, 5000)
	require.ErrorIs(t, err, ErrWorkerLost)
	t.Logf("after taskctl kill: %v", err)
	co.Release()
}

// TestDirectCallTimeout: a hung call on a direct lease is killed at call_timeout, taskd
// watching the worker's stats page.
func TestDirectCallTimeout(t *testing.T) {
	const callTimeout = 300 * time.Millisecond
	d, _ := leaseDaemon(t, "call_timeout: 300ms\ncancel_grace: 0s")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease"})
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	require.NotNil(t, co.pair)
	var pid int
	require.NoError(t, co.Call(ctx, "pid", &pid))
	start := time.Now()
	err = co.Call(ctx, "sleep", nil, 60000)
	failed := time.Since(start)
	require.ErrorIs(t, err, ErrCallTimeout)
	require.Eventually(t, func() bool { return !taskdtest.Alive(pid) }, 5*time.Second, time.Millisecond)
	killed := time.Since(start)
	t.Logf("call_timeout %v: the call failed after %v, the worker was gone after %v", callTimeout, failed, killed)
	assert.Less(t, killed, callTimeout+time.Second, "killed within call_timeout (+ slack for a loaded machine)")
	assert.GreaterOrEqual(t, failed, callTimeout)
	co.Release()
	// The pool goes on with a new worker.
	co, err = c.Checkout(ctx)
	require.NoError(t, err)
	require.NoError(t, co.Call(ctx, "echo", nil))
	co.Release()
}

// TestDirectClientGone: a client that goes away holding a lease gives its worker back:
// idle, to the pool (done hook run); with a call running, retired.
func TestDirectClientGone(t *testing.T) {
	d, _ := leaseDaemon(t, "")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease"})

	c1, err := New(Config{Addr: d.Addr, Interface: "lease"})
	require.NoError(t, err)
	co, err := c1.Checkout(ctx)
	require.NoError(t, err)
	var pid, dones int
	require.NoError(t, co.Call(ctx, "pid", &pid))
	require.NoError(t, co.Call(ctx, "dones", &dones))
	c1.Close() // no release: its connection ends

	co, err = c.Checkout(ctx)
	require.NoError(t, err)
	var pid2, dones2 int
	require.NoError(t, co.Call(ctx, "pid", &pid2))
	require.NoError(t, co.Call(ctx, "dones", &dones2))
	assert.Equal(t, pid, pid2, "back in the pool")
	assert.Equal(t, dones+1, dones2, "after its done hook")
	co.Release()

	c2, err := New(Config{Addr: d.Addr, Interface: "lease"})
	require.NoError(t, err)
	co, err = c2.Checkout(ctx)
	require.NoError(t, err)
	_ = co.Go("sleep", 300)
	time.Sleep(50 * time.Millisecond)
	c2.Close() // gone mid-call
	co, err = c.Checkout(ctx)
	require.NoError(t, err)
	require.NoError(t, co.Call(ctx, "pid", &pid2))
	assert.NotEqual(t, pid, pid2, "a worker whose call was given up is retired")
	co.Release()
}

// TestDirectThroughSandboxAndCgroup: the two descriptors reach a worker started through
// the sandbox helper (umask, rlimits) and one started into its own cgroup.
func TestDirectThroughSandboxAndCgroup(t *testing.T) {
	check := func(t *testing.T, d *taskdtest.Daemon) {
		c := newClient(t, Config{Addr: d.Addr, Interface: "lease"})
		co, err := c.Checkout(context.Background())
		require.NoError(t, err)
		defer co.Release()
		require.NotNil(t, co.pair, "direct")
		var n int
		require.NoError(t, co.Call(context.Background(), "lease", &n))
		assert.Positive(t, n)
	}
	t.Run("sandbox", func(t *testing.T) {
		d, _ := leaseDaemon(t, `umask: "0027"`+"\nrlimits: {nofile: 512}")
		check(t, d)
	})
	t.Run("cgroup", func(t *testing.T) {
		_, f := taskdtest.Cgroup(t)
		d, _ := leaseDaemonWith(t, "cgroup: {pids_max: 64}", taskdtest.Options{Wait: true, Cgroup: f})
		check(t, d)
	})
}

// TestDirectCallsInMetrics: the calls of a direct lease are in taskd_calls_total (method
// "(direct)") at a scrape while the lease is held, read from the stats page, and counted
// once when it ends.
func TestDirectCallsInMetrics(t *testing.T) {
	lw := taskdtest.Binary(t, "internal/taskdtest/leaseworker")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	d := taskdtest.Start(t, fmt.Sprintf("metrics_listen: %q\ninterfaces:\n  lease:\n    command: [%q]\n    min_idle: 1\n    max_workers: 1\n    call_timeout: 10s\n", addr, lw))
	scrape := func() (ok, failed string) {
		resp, err := http.Get("http://" + addr + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, `taskd_calls_total{interface="lease",method="(direct)",outcome="ok"}`) {
				ok = l[strings.LastIndexByte(l, ' ')+1:]
			}
			if strings.HasPrefix(l, `taskd_calls_total{interface="lease",method="(direct)",outcome="error"}`) {
				failed = l[strings.LastIndexByte(l, ' ')+1:]
			}
		}
		return ok, failed
	}
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease", KeepWorkerAfterError: true})
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	require.NotNil(t, co.pair)
	require.NoError(t, co.Call(ctx, "echo", nil))
	require.NoError(t, co.Call(ctx, "echo", nil))
	var re *RemoteError
	require.ErrorAs(t, co.Call(ctx, "fail", nil), &re)
	ok, failed := scrape()
	assert.Equal(t, "2", ok, "while the lease is held")
	assert.Equal(t, "1", failed)
	require.NoError(t, co.Call(ctx, "echo", nil))
	co.Release()
	require.Eventually(t, func() bool { ok, failed = scrape(); return ok == "3" }, 5*time.Second, 10*time.Millisecond, "ok: %s", ok)
	assert.Equal(t, "1", failed, "counted once")
}

// TestDirectSlowCall: a call on a direct lease that runs past slow_call is logged and
// counted once, while it runs (taskd does not see its answer); a short one is not.
func TestDirectSlowCall(t *testing.T) {
	d, _ := leaseDaemon(t, "slow_call: 100ms")
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "lease"})
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	require.NotNil(t, co.pair)
	require.NoError(t, co.Call(ctx, "echo", nil))
	var ms int
	require.NoError(t, co.Call(ctx, "sleep", &ms, 600))
	co.Release()
	st, err := c.DaemonStatus(ctx)
	require.NoError(t, err)
	require.Equal(t, "lease", st.Interfaces[0].Name)
	assert.EqualValues(t, 1, st.Interfaces[0].SlowCalls, "the sleep, once")
	assert.Contains(t, d.Logs(), `"msg":"slow call, still running on a direct lease"`)
	assert.Contains(t, d.Logs(), `"method":"sleep"`)
}

// daemonFDs counts taskd's open descriptors other than /proc files: taskd opens a worker's
// /proc/PID/stat lazily, at its first probe, so a replacement worker's may not be open
// yet when its predecessor's was. Pipes, sockets, pidfds and memfds are all counted.
func daemonFDs(t *testing.T, pid int) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && !strings.HasPrefix(l, "/proc/") {
			n++
		}
	}
	return n
}

// TestDirectReleasedWithCallUnread: a checkout released, or whose client went away, just
// after a call was written to its lease, before the worker had read it (a slow reader:
// the stats page shows no call running). Released by the client, which knows the call
// is unanswered: the worker is interrupted (cancel, cancel_grace, kill), as for a relayed
// checkout released with calls outstanding. Its client gone (no word on the call): taskd
// ends the lease, and the worker, which may finish a call it has read, starts it; taskd,
// watching the page while the lease ends, interrupts it the same way. Either way the
// worker is killed and retired, and the pool slot is free again.
func TestDirectReleasedWithCallUnread(t *testing.T) {
	lw := taskdtest.Binary(t, "internal/taskdtest/leaseworker")
	d := taskdtest.Start(t, fmt.Sprintf("interfaces:\n  slow:\n    command: [%q]\n    min_idle: 1\n    max_workers: 1\n"+
		"    cancel_grace: 100ms\n    env: {LEASEWORKER_SLOW_LEASE_MS: \"300\"}\n", lw))
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "slow"})
	for i, end := range []string{"release", "client gone"} {
		t.Run(end, func(t *testing.T) {
			cc := c
			if end == "client gone" {
				var err error
				cc, err = New(Config{Addr: d.Addr, Interface: "slow"})
				require.NoError(t, err)
				defer cc.Close()
			}
			co, err := cc.Checkout(ctx)
			require.NoError(t, err)
			require.NotNil(t, co.pair)
			var pid int
			require.NoError(t, co.Call(ctx, "pid", &pid))

			p := co.Go("spin") // read by the worker 300 ms later
			if end == "release" {
				co.Release()
				require.ErrorIs(t, p.Wait(ctx, nil), ErrReleased)
			} else {
				require.NoError(t, cc.Close())
				require.ErrorIs(t, p.Wait(ctx, nil), ErrClosed)
			}
			taskdtest.RequireGone(t, []int{pid}, 5*time.Second) // 300 ms, cancel_grace: slack for a loaded machine

			co, err = c.Checkout(ctx)
			require.NoError(t, err, "the pool slot (max_workers: 1) is free again")
			var pid2 int
			require.NoError(t, co.Call(ctx, "pid", &pid2))
			assert.NotEqual(t, pid, pid2)
			co.Release()
			st, err := c.DaemonStatus(ctx)
			require.NoError(t, err)
			assert.Equal(t, uint64(i+1), st.Interfaces[0].Exits["killed"], "exits: %v", st.Interfaces[0].Exits)
		})
	}
}

// TestDirectEndBounded: a worker that never answers "end" after a release (its done hook
// hangs) is not kept from the pool for ever: after call_timeout taskd interrupts the lease
// (cancel_grace, then kill), and the pool's slot serves the next checkout. Without
// call_timeout nothing bounds it, as in a relayed checkout.
func TestDirectEndBounded(t *testing.T) {
	lw := taskdtest.Binary(t, "internal/taskdtest/leaseworker")
	d := taskdtest.Start(t, fmt.Sprintf("interfaces:\n  hang:\n    command: [%q]\n    min_idle: 1\n    max_workers: 1\n"+
		"    call_timeout: 300ms\n    cancel_grace: 100ms\n    env: {LEASEWORKER_HANG_END: \"1\"}\n", lw))
	ctx := context.Background()
	c := newClient(t, Config{Addr: d.Addr, Interface: "hang"})
	co, err := c.Checkout(ctx)
	require.NoError(t, err)
	require.NotNil(t, co.pair)
	var pid int
	require.NoError(t, co.Call(ctx, "pid", &pid))
	co.Release()
	taskdtest.RequireGone(t, []int{pid}, 10*time.Second)

	co, err = c.Checkout(ctx)
	require.NoError(t, err, "the pool slot (max_workers: 1) is free again")
	var pid2 int
	require.NoError(t, co.Call(ctx, "pid", &pid2))
	assert.NotEqual(t, pid, pid2)
	st, err := c.DaemonStatus(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), st.Interfaces[0].Exits["killed"], "exits: %v", st.Interfaces[0].Exits)
	co.Abort(errors.New("done")) // its end would hang too
}
