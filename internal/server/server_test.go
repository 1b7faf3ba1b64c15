package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestMain(m *testing.M) { taskdtest.Main(m) }

func newClient(t *testing.T, d *taskdtest.Daemon, iface string, mod ...func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{Addr: d.Addr, Interface: iface, Timeout: 20 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := client.New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func status(t *testing.T, c *client.Client, iface string) client.InterfaceStatus {
	t.Helper()
	st, err := c.DaemonStatus(ctxT(t))
	require.NoError(t, err)
	for _, is := range st.Interfaces {
		if is.Name == iface {
			return is
		}
	}
	t.Fatalf("no interface %q in status", iface)
	return client.InterfaceStatus{}
}

func pid(t *testing.T, co *client.Checkout) int {
	t.Helper()
	var p int
	require.NoError(t, co.Call(ctxT(t), "pid", &p))
	return p
}

// echoWorkers are the worker implementations every round-trip test runs against.
func echoWorkers(t *testing.T) map[string]string {
	return map[string]string{
		"raw":   taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"),
		"gosdk": fmt.Sprintf("  echo:\n    command: [%q]\n    min_idle: 1\n", taskdtest.Binary(t, "examples/echo")),
	}
}

func TestRoundTripAndRemoteErrors(t *testing.T) {
	for name, yaml := range echoWorkers(t) {
		t.Run(name, func(t *testing.T) {
			d := taskdtest.Start(t, "interfaces:\n"+yaml)
			c := newClient(t, d, "echo")
			ctx := ctxT(t)
			arg := map[string]any{"𝄞 clef": []any{"😀", 1.5, nil, true, map[string]any{"深い": []any{}}}}
			var got []map[string]any
			require.NoError(t, c.Call(ctx, "echo", &got, arg))
			require.Len(t, got, 1)
			assert.Equal(t, arg["𝄞 clef"], got[0]["𝄞 clef"])

			var fn []string
			require.NoError(t, c.Call(ctx, "", &fn, "function-style"), "function-style call")
			assert.Equal(t, []string{"function-style"}, fn)

			var big []int64
			require.NoError(t, c.Call(ctx, "echo", &big, int64(1)<<62+1))
			assert.Equal(t, []int64{1<<62 + 1}, big)

			err := c.Call(ctx, "fail", nil)
			var re *client.RemoteError
			require.ErrorAs(t, err, &re)
			assert.NotEmpty(t, re.Message)
			assert.NotEmpty(t, re.Type)
			assert.Contains(t, err.Error(), "echo")
			assert.Contains(t, err.Error(), "fail")
		})
	}
}

func TestSetupRunsOncePerWorker(t *testing.T) {
	log := filepath.Join(t.TempDir(), "setups")
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 2\nmax_workers: 2", "TASKD_TEST_SETUP_LOG", log))
	c := newClient(t, d, "echo")
	require.Eventually(t, func() bool { return status(t, c, "echo").Idle == 2 }, 20*time.Second, 5*time.Millisecond)
	pids := map[int]bool{}
	for range 10 { // both workers at once, ten times over
		a, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		b, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		pids[pid(t, a)], pids[pid(t, b)] = true, true
		a.Release()
		b.Release()
	}
	require.Len(t, pids, 2, "the same two workers served every checkout")
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	lines := strings.Fields(string(b))
	assert.Len(t, lines, 2, "two workers, one setup each: %v", lines)
	for _, l := range lines {
		var p int
		fmt.Sscan(l, &p)
		assert.True(t, pids[p], "setup pid %d is one of the workers that served", p)
	}
}

func TestMinIdle(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+
		taskdtest.WorkerYAML("warm", "raw", "min_idle: 3\nmax_workers: 5")+
		taskdtest.WorkerYAML("cold", "raw", "min_idle: 0"))
	c := newClient(t, d, "warm")
	require.Eventually(t, func() bool { return status(t, c, "warm").Idle == 3 }, 20*time.Second, 10*time.Millisecond)
	cold := status(t, c, "cold")
	assert.Zero(t, cold.Live+cold.Starting)
	assert.Zero(t, cold.Spawns, "min_idle: 0 spawns nothing before the first checkout")
	cc := newClient(t, d, "cold")
	require.NoError(t, cc.Call(ctxT(t), "echo", nil))
	assert.EqualValues(t, 1, status(t, c, "cold").Spawns)
}

func TestSurgeWithinMaxWorkers(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 5"))
	c := newClient(t, d, "echo")
	var wg sync.WaitGroup
	pids := sync.Map{}
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co, err := c.Checkout(ctxT(t))
			if err != nil {
				errs <- err
				return
			}
			defer co.Release()
			var got []string
			if err := co.Call(ctxT(t), "sleep", nil, 5); err != nil {
				errs <- err
			}
			if err := co.Call(ctxT(t), "echo", &got, fmt.Sprint(i)); err != nil || got[0] != fmt.Sprint(i) {
				errs <- fmt.Errorf("call %d: %v %v", i, got, err)
			}
			var p int
			co.Call(ctxT(t), "pid", &p)
			pids.Store(p, true)
		}()
	}
	for range 50 {
		is := status(t, c, "echo")
		require.LessOrEqual(t, is.Live+is.Starting, 5, "max_workers is a cap across all clients")
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := 0
	pids.Range(func(any, any) bool { n++; return true })
	assert.LessOrEqual(t, n, 5)
	assert.EqualValues(t, 100, status(t, c, "echo").Checkouts)
}

func TestStrictFIFO(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	first, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	const n = 10
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			co, err := c.Checkout(ctxT(t))
			if !assert.NoError(t, err) {
				return
			}
			order <- i
			co.Release()
		}()
		require.Eventually(t, func() bool { return status(t, c, "echo").Queued == i+1 }, 10*time.Second, time.Millisecond)
	}
	first.Release()
	wg.Wait()
	close(order)
	i := 0
	for got := range order {
		assert.Equal(t, i, got)
		i++
	}
}

func TestMaxQueueOverload(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1\nmax_queue: 2"))
	c := newClient(t, d, "echo")
	held, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if co, err := c.Checkout(ctx); err == nil {
				co.Release()
			}
		}()
	}
	require.Eventually(t, func() bool { return status(t, c, "echo").Queued == 2 }, 10*time.Second, time.Millisecond)
	_, err = c.Checkout(ctxT(t))
	require.ErrorIs(t, err, client.ErrOverloaded)
	assert.Contains(t, err.Error(), "max_queue")
	cancel()
	wg.Wait()
	held.Release()
}

func TestMaxCheckoutsRecycles(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1\nmax_checkouts: 2"))
	c := newClient(t, d, "echo")
	var pids []int
	for range 3 {
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		pids = append(pids, pid(t, co))
		co.Release()
	}
	assert.Equal(t, pids[0], pids[1])
	assert.NotEqual(t, pids[1], pids[2])
}

func TestCallTimeoutKillsWorker(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\ncall_timeout: 200ms"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	err = co.Call(ctxT(t), "spin", nil)
	require.ErrorIs(t, err, client.ErrCallTimeout)
	require.ErrorIs(t, err, client.ErrWorkerLost)
	assert.Contains(t, err.Error(), "call_timeout")
	assert.Contains(t, err.Error(), "200ms")
	assert.ErrorIs(t, co.Call(ctxT(t), "echo", nil), client.ErrCallTimeout, "fatal errors stick to the checkout")
	co.Release()
	taskdtest.RequireGone(t, []int{p}, 5*time.Second)
	require.NoError(t, c.Call(ctxT(t), "echo", nil), "the interface carries on with a new worker")
}

func TestWorkerCrashMidCall(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	err = co.Call(ctxT(t), "crash", nil)
	require.ErrorIs(t, err, client.ErrWorkerLost)
	assert.Contains(t, err.Error(), "exited with status 3")
	assert.Contains(t, err.Error(), "about to crash on purpose", "the stderr tail reaches the caller")
	co.Release()
	require.NoError(t, c.Call(ctxT(t), "echo", nil))
}

func TestIdleWorkerKilledThenNextCheckoutSucceeds(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	co.Release()
	require.NoError(t, syscall.Kill(p, syscall.SIGKILL))
	co, err = c.Checkout(ctxT(t))
	require.NoError(t, err)
	assert.NotEqual(t, p, pid(t, co))
	co.Release()
}

func TestGarbageStdoutIsIgnored(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	c := newClient(t, d, "echo")
	var got string
	require.NoError(t, c.Call(ctxT(t), "garbage", &got))
	assert.Equal(t, "after garbage", got)
	require.Eventually(t, func() bool { return strings.Contains(d.Logs(), "this line is not JSON") }, 5*time.Second, 10*time.Millisecond)
}

func TestOverLongLineIsAProtocolError(t *testing.T) {
	d := taskdtest.Start(t, "max_message_bytes: 64KiB\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	err = co.Call(ctxT(t), "longline", nil, 100_000)
	require.ErrorIs(t, err, client.ErrProtocol)
	assert.Contains(t, err.Error(), "longer than 65536 bytes")
	assert.Contains(t, err.Error(), `xxxxxxxxxx`, "the error quotes the start of the line")
	co.Release()
	var ok []any
	require.NoError(t, c.Call(ctxT(t), "echo", &ok), "only that worker was affected")
}

func TestWorkerThatNeverGetsReady(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("slow", "neverready", "min_idle: 0\nsetup_timeout: 2s")) // long enough for a loaded machine to start it
	c := newClient(t, d, "slow")
	_, err := c.Checkout(ctxT(t))
	require.ErrorIs(t, err, client.ErrUnavailable)
	assert.Contains(t, err.Error(), "setup_timeout")
	assert.Contains(t, err.Error(), "setting up forever", "the stderr tail says why")
}

func TestWorkerThatExitsAtOnceDoesNotForkStorm(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("broken", "exitnow", "min_idle: 2\nmax_workers: 4"))
	c := newClient(t, d, "broken")
	_, err := c.Checkout(ctxT(t))
	require.ErrorIs(t, err, client.ErrUnavailable)
	assert.Contains(t, err.Error(), "cannot open database")
	begin := time.Now()
	start := status(t, c, "broken").Spawns
	for time.Since(begin) < 5*time.Second {
		_, err := c.Checkout(ctxT(t))
		require.ErrorIs(t, err, client.ErrUnavailable)
	}
	spawns := status(t, c, "broken").Spawns - start
	t.Logf("%d spawns in 5s of constant demand", spawns)
	assert.LessOrEqual(t, spawns, uint64(15), "backoff bounds the spawn rate")
}

func TestByeRetiresWorker(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	a := pid(t, co)
	require.NoError(t, co.Call(ctxT(t), "bye", nil))
	assert.Equal(t, a, pid(t, co), "bye takes effect when the checkout ends")
	co.Release()
	co, err = c.Checkout(ctxT(t))
	require.NoError(t, err)
	assert.NotEqual(t, a, pid(t, co))
	co.Release()
	taskdtest.RequireGone(t, []int{a}, 5*time.Second)
}

func TestRemoteErrorRetiresUnlessKept(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	for _, keep := range []bool{false, true} {
		c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.KeepWorkerAfterError = keep })
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		a := pid(t, co)
		var re *client.RemoteError
		require.ErrorAs(t, co.Call(ctxT(t), "fail", nil), &re)
		assert.Equal(t, "TestError", re.Type)
		assert.Equal(t, a, pid(t, co), "the checkout stays usable after a remote error")
		co.Release()
		co, err = c.Checkout(ctxT(t))
		require.NoError(t, err)
		assert.Equal(t, keep, a == pid(t, co), "keep=%v", keep)
		co.Release()
	}
}

func TestDoneIsSentOnRelease(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	for range 3 {
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		co.Release()
	}
	var dones int
	require.NoError(t, c.Call(ctxT(t), "dones", &dones))
	assert.Equal(t, 3, dones)
}

func TestStderrLinesAreLoggedWithWorkerFields(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	c := newClient(t, d, "echo")
	require.NoError(t, c.Call(ctxT(t), "stderr", nil, 10))
	require.Eventually(t, func() bool {
		for _, line := range strings.Split(d.Logs(), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil && e["msg"] == "eeeeeeeeee" {
				return e["interface"] == "echo" && e["worker"] != nil && e["pid"] != nil
			}
		}
		return false
	}, 5*time.Second, 10*time.Millisecond, d.Logs())
}

func TestUnknownInterface(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))
	c := newClient(t, d, "nope")
	_, err := c.Checkout(ctxT(t))
	require.ErrorIs(t, err, client.ErrUnknownInterface)
	assert.Contains(t, err.Error(), "echo", "the error lists what is served")
}

func TestSIGTERMDrainsCallInFlight(t *testing.T) {
	d := taskdtest.Start(t, "shutdown_grace: 10s\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	done := make(chan error, 1)
	go func() { done <- co.Call(ctxT(t), "sleep", nil, 700) }()
	require.Eventually(t, func() bool { return status(t, c, "echo").Workers[0].Method == "sleep" }, 5*time.Second, time.Millisecond)
	c2 := newClient(t, d, "echo")
	_, err = c2.Ping(ctxT(t)) // connected before the signal: afterwards taskd accepts no connections
	require.NoError(t, err)
	d.Signal(syscall.SIGTERM)
	// New checkouts on open connections are refused while the held one finishes. (A
	// client keeps such a checkout waiting for a restarted daemon until its deadline.)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, err := c2.Checkout(ctx)
		return errors.Is(err, client.ErrShuttingDown)
	}, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, <-done, "the call in flight completes")
	co.Release()
	select {
	case <-d.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("taskd did not exit after its checkouts ended")
	}
	require.NoError(t, d.ExitErr(), "exit status 0")
	taskdtest.RequireGone(t, []int{p}, 5*time.Second)
}

func TestSIGTERMStopsWorkersAfterGrace(t *testing.T) {
	d := taskdtest.Start(t, "shutdown_grace: 300ms\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	done := make(chan error, 1)
	go func() { done <- co.Call(ctxT(t), "spin", nil) }()
	require.Eventually(t, func() bool { return status(t, c, "echo").Workers[0].Method == "spin" }, 5*time.Second, time.Millisecond)
	d.Signal(syscall.SIGTERM)
	require.ErrorIs(t, <-done, client.ErrWorkerLost)
	<-d.Exited()
	require.NoError(t, d.ExitErr())
	taskdtest.RequireGone(t, []int{p}, 5*time.Second)
}

func TestNoOrphanAfterSIGKILLOfDaemon(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 3\nmax_workers: 3"))
	c := newClient(t, d, "echo")
	require.Eventually(t, func() bool { return status(t, c, "echo").Idle == 3 }, 20*time.Second, 10*time.Millisecond)
	kids := taskdtest.Descendants(d.PID())
	require.Len(t, kids, 3)
	d.Signal(syscall.SIGKILL)
	<-d.Exited()
	taskdtest.RequireGone(t, kids, 5*time.Second)
}

func TestRecycling200WorkersLeaksNothing(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2\nmax_checkouts: 1"))
	c := newClient(t, d, "echo")
	require.NoError(t, c.Call(ctxT(t), "echo", nil))
	settle := func() (fds, kids int) {
		require.Eventually(t, func() bool {
			is := status(t, c, "echo")
			return is.Live == 1 && is.Idle == 1 && len(taskdtest.Children(d.PID())) == 1
		}, 20*time.Second, 5*time.Millisecond)
		return taskdtest.FDCount(t, d.PID()), len(taskdtest.Children(d.PID()))
	}
	fds0, kids0 := settle()
	seen := map[int]bool{}
	for range 200 {
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		seen[pid(t, co)] = true
		co.Release()
	}
	assert.Len(t, seen, 200, "max_checkouts: 1 gives every checkout a fresh worker")
	fds1, kids1 := settle()
	assert.Equal(t, fds0, fds1, "open fds of taskd before and after 200 recycles")
	assert.Equal(t, kids0, kids1, "children of taskd before and after")
	out, _ := exec.Command("ps", "-o", "stat=", "--ppid", fmt.Sprint(d.PID())).Output()
	assert.NotContains(t, string(out), "Z", "no zombies")
}

func TestReleaseWithCallRunningKillsWorker(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1\ncancel_grace: 100ms"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	p := pid(t, co)
	spin := co.Go("spin")
	require.Eventually(t, func() bool { return status(t, c, "echo").Workers[0].Method == "spin" }, 5*time.Second, time.Millisecond)
	co.Release()
	require.ErrorIs(t, spin.Wait(ctxT(t), nil), client.ErrReleased)
	// Killed after cancel_grace, not stopped gracefully: the pool's stop grace is 2s, and
	// a spinning call does not read the EOF on its stdin.
	taskdtest.RequireGone(t, []int{p}, 1500*time.Millisecond)
	require.NoError(t, c.Call(ctxT(t), "echo", nil), "the slot is free for a new worker")
}

func TestStaleSocketIsReplacedAndLiveOneRefused(t *testing.T) {
	yaml := "interfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 0")
	first := taskdtest.Start(t, yaml)
	// A second daemon on the same socket while the first is alive: refused at start.
	second := taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: first.Dir})
	<-second.Exited()
	require.Error(t, second.ExitErr())
	assert.Contains(t, second.Logs(), "another taskd is already listening")
	// The first one dies without cleaning up: its socket file stays behind.
	first.Signal(syscall.SIGKILL)
	<-first.Exited()
	_, err := os.Stat(first.Socket)
	require.NoError(t, err, "a SIGKILLed daemon leaves its socket file")
	third := taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: first.Dir, Wait: true})
	c := newClient(t, third, "echo")
	require.NoError(t, c.Call(ctxT(t), "echo", nil), "the stale socket was replaced")
}

func TestTCPListeners(t *testing.T) {
	t.Run("non-loopback without TLS is refused", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "taskd.yaml")
		require.NoError(t, os.WriteFile(cfg, []byte("listen: [\"tcp://0.0.0.0:0\"]\ninterfaces:\n"+
			taskdtest.WorkerYAML("echo", "raw", "min_idle: 0")), 0o644))
		out, err := exec.Command(taskdtest.Binary(t, "cmd/taskd"), "--check-config", "-c", cfg).CombinedOutput()
		require.Error(t, err)
		assert.Contains(t, string(out), "loopback")
	})
	t.Run("loopback works", func(t *testing.T) {
		// A client started before taskd listens on a loopback port, then calls over TCP.
		dir := t.TempDir()
		port := freePort(t)
		cfg := filepath.Join(dir, "taskd.yaml")
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("listen: [\"tcp://127.0.0.1:%d\"]\ninterfaces:\n%s", port,
			taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))), 0o644))
		cmd := exec.Command(taskdtest.Binary(t, "cmd/taskd"), "-c", cfg)
		require.NoError(t, cmd.Start())
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		c, err := client.New(client.Config{Addr: fmt.Sprintf("tcp://127.0.0.1:%d", port), Interface: "echo", Timeout: 20 * time.Second})
		require.NoError(t, err)
		defer c.Close()
		var got []string
		require.NoError(t, c.Call(ctxT(t), "echo", &got, "over tcp"), "the client waits until taskd listens")
		assert.Equal(t, []string{"over tcp"}, got)
	})
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// rawConn speaks the client protocol directly, for tests of the protocol's own rules.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	sc *bufio.Scanner
}

func dialRaw(t *testing.T, d *taskdtest.Daemon) *rawConn {
	c, err := net.Dial("unix", d.Socket)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	return &rawConn{t: t, c: c, sc: bufio.NewScanner(c)}
}

func (r *rawConn) send(line string) {
	_, err := r.c.Write([]byte(line + "\n"))
	require.NoError(r.t, err)
}

func (r *rawConn) recv() map[string]any {
	require.True(r.t, r.sc.Scan(), "no reply: %v", r.sc.Err())
	var m map[string]any
	require.NoError(r.t, json.Unmarshal(r.sc.Bytes(), &m))
	return m
}

// TestCallsSentBeforeAnErrorWasSeenAreAborted checks the "ep" rule deterministically: a
// call that reaches taskd after an error, but was sent before the client saw it, is not run.
func TestCallsSentBeforeAnErrorWasSeenAreAborted(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	r := dialRaw(t, d)
	r.send(`{"t":"checkout","id":1,"iface":"echo"}`)
	g := r.recv()
	require.Equal(t, "granted", g["t"])
	co := int(g["co"].(float64))
	r.send(fmt.Sprintf(`{"t":"call","co":%d,"id":1,"m":"fail"}`, co))
	require.Equal(t, "err", r.recv()["t"])
	// Sent "before" the client saw the error (ep 0), arriving after it: aborted.
	r.send(fmt.Sprintf(`{"t":"call","co":%d,"id":2,"m":"echo","a":["commit"],"ep":0}`, co))
	m := r.recv()
	assert.Equal(t, "fail", m["t"])
	assert.Equal(t, "aborted", m["code"])
	// Sent after seeing it (ep 1): runs.
	r.send(fmt.Sprintf(`{"t":"call","co":%d,"id":3,"m":"echo","a":["after"],"ep":1}`, co))
	m = r.recv()
	assert.Equal(t, "ok", m["t"])
	assert.Equal(t, []any{"after"}, m["r"])
}

// TestAbortIsDecidedByWhatTheCallerSaw: a call made after the error came back, but before
// the caller collected it, is still "queued behind" the failing call: aborted, whatever the
// timing. Once the caller has the error, calls run.
func TestAbortIsDecidedByWhatTheCallerSaw(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer co.Release()
	failing := co.Go("fail")
	// The error has been answered by the worker and sent back by taskd...
	require.Eventually(t, func() bool { return status(t, c, "echo").Workers[0].Method == "" }, 5*time.Second, time.Millisecond)
	// ...but the caller has not looked at it: this call is behind it.
	behind := co.Go("echo", "commit")
	var re *client.RemoteError
	require.ErrorAs(t, failing.Wait(ctxT(t), nil), &re)
	require.ErrorIs(t, behind.Wait(ctxT(t), nil), client.ErrAborted)
	var got []string
	require.NoError(t, co.Call(ctxT(t), "echo", &got, "after"), "calls made after seeing the error run")
	assert.Equal(t, []string{"after"}, got)
}

// TestCallTimeoutCountsFromWhenACallRuns: to a pipelining worker (the Go SDK) taskd sends
// calls at once; each call's call_timeout starts when the worker gets to it.
func TestCallTimeoutCountsFromWhenACallRuns(t *testing.T) {
	d := taskdtest.Start(t, fmt.Sprintf("interfaces:\n  echo:\n    command: [%q]\n    min_idle: 1\n    call_timeout: 250ms\n",
		taskdtest.Binary(t, "examples/echo")))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	defer co.Release()
	var ps []*client.Pending
	for range 5 {
		ps = append(ps, co.Go("sleep", 100))
	}
	for i, p := range ps {
		require.NoError(t, p.Wait(ctxT(t), nil), "call %d", i)
	}
	// A single call longer than call_timeout is still killed.
	require.ErrorIs(t, co.Call(ctxT(t), "sleep", nil, 1000), client.ErrCallTimeout)
}

// TestOneShotCalls: Client.Call sends checkout and call in one message and taskd releases
// the worker itself, with the same rules as an explicit checkout.
func TestOneShotCalls(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	onePID := func(c *client.Client) int {
		var p int
		require.NoError(t, c.Call(ctxT(t), "pid", &p))
		return p
	}
	t.Run("MaxCheckouts", func(t *testing.T) {
		c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.MaxCheckouts = 2 })
		onePID(c) // start from a fresh worker: the previous one may have served others
		c2 := newClient(t, d, "echo", func(cfg *client.Config) { cfg.MaxCheckouts = 1 })
		onePID(c2)
		a, b, x := onePID(c), onePID(c), onePID(c)
		assert.Equal(t, a, b)
		assert.NotEqual(t, b, x)
	})
	t.Run("a remote error retires the worker unless kept", func(t *testing.T) {
		for _, keep := range []bool{false, true} {
			c := newClient(t, d, "echo", func(cfg *client.Config) { cfg.KeepWorkerAfterError = keep })
			a := onePID(c)
			var re *client.RemoteError
			require.ErrorAs(t, c.Call(ctxT(t), "fail", nil), &re)
			assert.Equal(t, keep, a == onePID(c), "keep=%v", keep)
		}
	})
	t.Run("the worker gets one done per checkout, after its call", func(t *testing.T) {
		// The done of a one-shot checkout is written with its call; a held checkout's at
		// its release. The raw worker counts the dones it has read.
		c := newClient(t, d, "echo")
		dones := func(call func(result any) error) int {
			var n int
			require.NoError(t, call(&n))
			return n
		}
		oneShot := func(r any) error { return c.Call(ctxT(t), "dones", r) }
		n := dones(oneShot)
		assert.Equal(t, n+1, dones(oneShot))
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		held := func(r any) error { return co.Call(ctxT(t), "dones", r) }
		assert.Equal(t, n+2, dones(held))
		assert.Equal(t, n+2, dones(held), "no done within a checkout")
		co.Release()
		assert.Equal(t, n+3, dones(oneShot))
	})
	t.Run("a worker that says bye does not serve another checkout", func(t *testing.T) {
		c := newClient(t, d, "echo")
		byes := func() int { return strings.Count(d.Logs(), "worker asked to be retired") }
		for range 3 {
			// bye before the answer (as the SDKs send it): retired at the release that
			// taskd makes when it reads the answer.
			a := onePID(c)
			require.NoError(t, c.Call(ctxT(t), "bye", nil))
			assert.NotEqual(t, a, onePID(c), "bye before the answer")

			// bye after the answer: taskd may have released the worker already; once it
			// has read the bye, the idle worker is retired instead of checked out.
			a, n := onePID(c), byes()
			require.NoError(t, c.Call(ctxT(t), "byeafter", nil))
			require.Eventually(t, func() bool { return byes() > n }, 10*time.Second, time.Millisecond)
			assert.NotEqual(t, a, onePID(c), "bye after the answer")
		}
	})
	t.Run("a caller deadline kills the worker", func(t *testing.T) {
		c := newClient(t, d, "echo")
		a := onePID(c)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		require.ErrorIs(t, c.Call(ctx, "spin", nil), context.DeadlineExceeded)
		taskdtest.RequireGone(t, []int{a}, 5*time.Second)
		assert.NotEqual(t, a, onePID(c))
	})
}

func TestMetricsEndpoint(t *testing.T) {
	port := freePort(t)
	d := taskdtest.Start(t, fmt.Sprintf("metrics_listen: \"127.0.0.1:%d\"\ninterfaces:\n%s", port,
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 2\nmax_workers: 3")))
	c := newClient(t, d, "echo")
	require.NoError(t, c.Call(ctxT(t), "echo", nil))
	require.Eventually(t, func() bool { return status(t, c, "echo").Idle == 2 }, 10*time.Second, 5*time.Millisecond)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	text := string(body)
	for _, want := range []string{
		`taskd_workers{interface="echo",state="idle"} 2`,
		`taskd_checkouts_total{interface="echo",outcome="granted"} 1`,
		`taskd_queued_checkouts{interface="echo"} 0`,
		`taskd_worker_spawns_total{interface="echo"} 2`,
		`taskd_worker_exits_total{interface="echo",reason="crashed"} 0`,
		`taskd_build_info{version=`,
		`process_open_fds`,
	} {
		assert.Contains(t, text, want)
	}
}

// TestAcceptSurvivesRunningOutOfDescriptors: when accept fails for lack of descriptors,
// taskd keeps its listener and serves again once descriptors are free.
func TestAcceptSurvivesRunningOutOfDescriptors(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))
	// Lower taskd's descriptor limit to what it has open now, so accept gets EMFILE.
	open := taskdtest.FDCount(t, d.PID())
	out, err := exec.Command("prlimit", "--pid", fmt.Sprint(d.PID()), fmt.Sprintf("--nofile=%d:%d", open, 1<<16)).CombinedOutput()
	if err != nil {
		t.Skipf("SKIPPING: prlimit is not available here (%v: %s)", err, out)
	}
	c, err := net.Dial("unix", d.Socket) // queued by the kernel; taskd cannot accept it
	require.NoError(t, err)
	c.Close()
	require.Eventually(t, func() bool { return strings.Contains(d.Logs(), "accept failed; retrying") }, 10*time.Second, 10*time.Millisecond)
	out, err = exec.Command("prlimit", "--pid", fmt.Sprint(d.PID()), "--nofile=65536:65536").CombinedOutput()
	require.NoError(t, err, "%s", out)
	cl := newClient(t, d, "echo")
	require.NoError(t, cl.Call(ctxT(t), "echo", nil), "taskd serves again")
}

// TestClientThatDoesNotReadIsCutOff: a client that sends requests and never reads the
// answers cannot make taskd's memory grow: past a few max_message_bytes of unread answers
// its connection is closed, and taskd goes on serving others.
func TestClientThatDoesNotReadIsCutOff(t *testing.T) {
	d := taskdtest.Start(t, "max_message_bytes: 64KiB\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))
	conn, err := net.Dial("unix", d.Socket)
	require.NoError(t, err)
	defer conn.Close()
	pings := bytes.Repeat([]byte(`{"t":"ping","id":1}`+"\n"), 1000)
	require.NoError(t, conn.SetWriteDeadline(time.Now().Add(20*time.Second)))
	for err == nil {
		_, err = conn.Write(pings)
	}
	require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "taskd still accepts requests from a client that reads nothing")
	require.Eventually(t, func() bool { return strings.Contains(d.Logs(), "client does not read its replies") },
		5*time.Second, 10*time.Millisecond)
	_, err = newClient(t, d, "echo").Ping(ctxT(t))
	require.NoError(t, err)
}

// TestSIGTERMWithAClientThatDoesNotRead: taskd's flush of a closing connection is bounded,
// so a client that stopped reading cannot keep it from exiting.
func TestSIGTERMWithAClientThatDoesNotRead(t *testing.T) {
	d := taskdtest.Start(t, "max_message_bytes: 1MiB\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 0"))
	conn, err := net.Dial("unix", d.Socket)
	require.NoError(t, err)
	defer conn.Close()
	// About 1 MB of answers: more than the socket buffers hold, less than the backlog
	// limit, so taskd's writer is left blocked on this connection.
	_, err = conn.Write(bytes.Repeat([]byte(`{"t":"ping","id":1}`+"\n"), 25000))
	require.NoError(t, err)
	_, err = newClient(t, d, "echo").Ping(ctxT(t)) // taskd has read them all by now
	require.NoError(t, err)
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("taskd did not exit: it waits for a client that does not read")
	}
	require.NoError(t, d.ExitErr(), "exit status 0")
}
