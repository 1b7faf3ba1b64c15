package server_test

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// rewrite replaces the daemon's config file (keeping its listen address), as an operator
// edits it before a reload.
func rewrite(t *testing.T, d *taskdtest.Daemon, yaml string) {
	t.Helper()
	require.NoError(t, os.WriteFile(d.Config, fmt.Appendf(nil, "listen: [%q]\n%s", d.Addr, yaml), 0o600))
}

// envOf returns the value of variable name in the environment of the worker that runs a
// call ("env" method).
func envOf(t *testing.T, call func(method string, result any) error, name string) string {
	t.Helper()
	var env []string
	require.NoError(t, call("env", &env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

func change(t *testing.T, rep client.ReloadReport, name string) client.InterfaceChange {
	t.Helper()
	for _, ch := range rep.Interfaces {
		if ch.Name == name {
			return ch
		}
	}
	t.Fatalf("no interface %q in the reload report %+v", name, rep)
	return client.InterfaceChange{}
}

// TestReloadAppliesPerInterface: one reload changes an interface's env (new generation),
// another's max_workers (in place), removes a third and adds a fourth, and changes a key
// that needs a restart. Held checkouts of the changed and the removed interface go on
// with their workers; new checkouts get new-generation workers, or are refused for the
// removed interface; old workers retire as their checkouts end.
func TestReloadAppliesPerInterface(t *testing.T) {
	a := func(gen string) string {
		return taskdtest.WorkerYAML("a", "raw", "min_idle: 2\nmax_workers: 3", "GEN", gen)
	}
	b := func(max int) string {
		return taskdtest.WorkerYAML("b", "raw", fmt.Sprintf("min_idle: 1\nmax_workers: %d", max))
	}
	c := taskdtest.WorkerYAML("c", "raw", "min_idle: 1")
	e := taskdtest.WorkerYAML("e", "raw", "min_idle: 1")
	d := taskdtest.Start(t, "interfaces:\n"+a("1")+b(2)+c)
	ca, cc := newClient(t, d, "a"), newClient(t, d, "c")

	heldA, err := ca.Checkout(ctxT(t))
	require.NoError(t, err)
	callA := func(m string, r any) error { return heldA.Call(ctxT(t), m, r) }
	require.Equal(t, "1", envOf(t, callA, "GEN"))
	pidA := pid(t, heldA)
	heldC, err := cc.Checkout(ctxT(t))
	require.NoError(t, err)
	pidC := pid(t, heldC)
	// The second generation-1 worker that min_idle started, idle beside the held one.
	require.Eventually(t, func() bool { return status(t, ca, "a").Idle == 1 }, 20*time.Second, 5*time.Millisecond)

	rewrite(t, d, "socket_mode: \"0600\"\ninterfaces:\n"+a("2")+b(3)+e)
	rep, err := ca.Reload(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, client.InterfaceChange{Name: "a", Change: client.ChangeNewGeneration, Keys: []string{"env"}, Generation: 2}, change(t, rep, "a"))
	assert.Equal(t, client.InterfaceChange{Name: "b", Change: client.ChangeResized, Keys: []string{"max_workers"}, Generation: 1}, change(t, rep, "b"))
	assert.Equal(t, client.ChangeRemoved, change(t, rep, "c").Change)
	assert.Equal(t, client.InterfaceChange{Name: "e", Change: client.ChangeAdded, Generation: 1}, change(t, rep, "e"))
	assert.Equal(t, []string{"socket_mode"}, rep.NeedsRestart)

	// a: new checkouts get the new generation; the held one keeps its worker.
	oneShot := func(m string, r any) error { return ca.Call(ctxT(t), m, r) }
	assert.Equal(t, "2", envOf(t, oneShot, "GEN"))
	assert.Equal(t, "1", envOf(t, callA, "GEN"))
	assert.Equal(t, pidA, pid(t, heldA))
	is := status(t, ca, "a")
	assert.Equal(t, 2, is.Generation)
	for _, w := range is.Workers {
		if w.PID == pidA {
			assert.Equal(t, 1, w.Gen)
			assert.Equal(t, "busy", w.State)
		} else if w.State != "retiring" {
			assert.Equal(t, 2, w.Gen, "worker %+v", w)
		}
	}
	require.Eventually(t, func() bool { return status(t, ca, "a").Exits[client.ExitReload] >= 1 }, 10*time.Second, 5*time.Millisecond, "the idle generation-1 worker retires at the take-over")
	heldA.Release()
	taskdtest.RequireGone(t, []int{pidA}, 10*time.Second)
	require.Eventually(t, func() bool {
		return !slices.ContainsFunc(status(t, ca, "a").Workers, func(w client.WorkerStatus) bool { return w.Gen == 1 })
	}, 10*time.Second, 5*time.Millisecond, "generation-1 workers are gone once their checkouts end")
	assert.GreaterOrEqual(t, status(t, ca, "a").Exits[client.ExitReload], uint64(2))

	// b: resized in place.
	assert.Equal(t, 3, status(t, ca, "b").MaxWorkers)

	// c: refused for new checkouts, the held one finishes; then its workers stop.
	err = cc.Call(ctxT(t), "echo", nil, "x")
	assert.ErrorIs(t, err, client.ErrInterfaceRemoved)
	assert.ErrorIs(t, err, client.ErrUnknownInterface)
	assert.Contains(t, err.Error(), "removed by a reload")
	assert.Equal(t, pidC, pid(t, heldC))
	assert.True(t, status(t, ca, "c").Removed)
	var cPIDs []int
	for _, w := range status(t, ca, "c").Workers {
		cPIDs = append(cPIDs, w.PID)
	}
	heldC.Release()
	taskdtest.RequireGone(t, cPIDs, 10*time.Second)
	require.Eventually(t, func() bool {
		st, err := ca.DaemonStatus(ctxT(t))
		require.NoError(t, err)
		return !slices.ContainsFunc(st.Interfaces, func(is client.InterfaceStatus) bool { return is.Name == "c" })
	}, 10*time.Second, 5*time.Millisecond, "the removed interface leaves status once its last checkout ends")

	// e: serves.
	require.NoError(t, newClient(t, d, "e").Call(ctxT(t), "echo", nil, "x"))
	assert.Contains(t, d.Logs(), "these keys changed but take effect only when taskd restarts")
}

// TestReloadInvalidConfigChangesNothing: a config that is not valid is refused, by a
// reload request (typed error with the problems) and by SIGHUP (logged); taskd keeps
// serving the old one. Fixed, a SIGHUP applies it, with RELOADING=1 (and MONOTONIC_USEC)
// and then READY=1 sent to systemd.
func TestReloadInvalidConfigChangesNothing(t *testing.T) {
	a := func(gen string) string { return taskdtest.WorkerYAML("a", "raw", "min_idle: 1", "GEN", gen) }
	d := taskdtest.Start(t, "interfaces:\n"+a("1"))
	c := newClient(t, d, "a")
	call := func(m string, r any) error { return c.Call(ctxT(t), m, r) }

	rewrite(t, d, "interfaces:\n"+a("2")+"    max_wrokers: 3\n")
	_, err := c.Reload(ctxT(t))
	require.ErrorIs(t, err, client.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "unknown key interfaces.a.max_wrokers (did you mean max_workers?)")
	require.NoError(t, d.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Count(d.Logs(), "reload refused") == 2 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, "1", envOf(t, call, "GEN"), "the old config still runs")
	assert.Equal(t, 1, status(t, c, "a").Generation)

	before := len(d.Notifications())
	rewrite(t, d, "interfaces:\n"+a("2"))
	require.NoError(t, d.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return status(t, c, "a").Generation == 2 }, 20*time.Second, 5*time.Millisecond)
	assert.Equal(t, "2", envOf(t, call, "GEN"))
	select {
	case <-d.Exited():
		t.Fatalf("SIGHUP stopped taskd: %v", d.ExitErr())
	default:
	}
	// The notifications of the last reload: RELOADING=1 with the time, then READY=1.
	require.Eventually(t, func() bool {
		notes := d.Notifications()[before:]
		i := slices.Index(notes, "RELOADING=1")
		return i >= 0 && slices.Contains(notes[i:], "READY=1")
	}, 10*time.Second, 5*time.Millisecond)
	notes := d.Notifications()[before:]
	assert.True(t, slices.ContainsFunc(notes, regexp.MustCompile(`^MONOTONIC_USEC=\d+$`).MatchString), "notifications %q", notes)
}

// TestReloadFailedGenerationKeepsServing: a new generation whose worker cannot start is
// abandoned; the old workers keep serving with the old env, and the report says why.
func TestReloadFailedGenerationKeepsServing(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("a", "raw", "min_idle: 2\nmax_workers: 2", "GEN", "1"))
	c := newClient(t, d, "a")
	require.Eventually(t, func() bool { return status(t, c, "a").Idle == 2 }, 20*time.Second, 5*time.Millisecond)
	rewrite(t, d, "interfaces:\n"+taskdtest.WorkerYAML("a", "exitnow", "min_idle: 2\nmax_workers: 3", "GEN", "2"))
	rep, err := c.Reload(ctxT(t))
	require.NoError(t, err)
	ch := change(t, rep, "a")
	assert.Equal(t, client.ChangeFailed, ch.Change)
	assert.Equal(t, 1, ch.Generation)
	assert.NotEmpty(t, ch.Error)
	call := func(m string, r any) error { return c.Call(ctxT(t), m, r) }
	assert.Equal(t, "1", envOf(t, call, "GEN"))
	is := status(t, c, "a")
	assert.Equal(t, 1, is.Generation)
	assert.Equal(t, 3, is.MaxWorkers, "the pool keys of the same reload still apply")
	for _, w := range is.Workers {
		assert.NotEqual(t, "warming", w.State)
	}
}

// TestReloadUnderLoadLosesNothing: eight callers make one-shot calls and calls on held
// checkouts for 10s while the config is rewritten and reloaded 20 times: a new env each
// time (a new generation), max_workers up and down, and an interface added and removed.
// No call fails, and a call made after each reload sees that reload's env.
func TestReloadUnderLoadLosesNothing(t *testing.T) {
	cfg := func(i int) string {
		y := "interfaces:\n" + taskdtest.WorkerYAML("a", "raw",
			fmt.Sprintf("min_idle: 2\nmax_workers: %d", 2+i%3), "GEN", fmt.Sprint(i))
		if i%2 == 1 {
			y += taskdtest.WorkerYAML("x", "raw", "min_idle: 1")
		}
		return y
	}
	d := taskdtest.Start(t, cfg(0))
	c := newClient(t, d, "a", func(c *client.Config) { c.MaxWorkers = 16 })
	admin := newClient(t, d, "a")

	var calls, failed atomic.Int64
	var errsMu sync.Mutex
	var errs []error
	fail := func(err error) {
		failed.Add(1)
		errsMu.Lock()
		errs = append(errs, err)
		errsMu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if i%2 == 0 {
					calls.Add(1)
					if err := c.Call(ctxT(t), "echo", nil, "x"); err != nil {
						fail(err)
					}
					continue
				}
				co, err := c.Checkout(ctxT(t))
				if err != nil {
					fail(err)
					continue
				}
				for range 3 {
					calls.Add(1)
					if err := co.Call(ctxT(t), "echo", nil, "y"); err != nil {
						fail(err)
					}
				}
				co.Release()
			}
		}()
	}

	deadline := time.Now().Add(10 * time.Second)
	probe := func(m string, r any) error { return admin.Call(ctxT(t), m, r) }
	for i := 1; i <= 20; i++ {
		rewrite(t, d, cfg(i))
		rep, err := admin.Reload(ctxT(t))
		require.NoError(t, err, "reload %d", i)
		assert.Equal(t, client.ChangeNewGeneration, change(t, rep, "a").Change, "reload %d", i)
		assert.Equal(t, fmt.Sprint(i), envOf(t, probe, "GEN"), "a call after reload %d", i)
		if i%2 == 1 {
			assert.NoError(t, newClient(t, d, "x").Call(ctxT(t), "echo", nil, "z"), "x after reload %d added it", i)
		}
		if left := time.Until(deadline); left > 0 {
			time.Sleep(left / time.Duration(21-i))
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d calls, %d failed, 20 reloads", calls.Load(), failed.Load())
	assert.Zero(t, failed.Load(), "failed calls: %v", errors.Join(errs...))
	assert.Positive(t, calls.Load())
	is := status(t, admin, "a")
	assert.Equal(t, 21, is.Generation)
	assert.Positive(t, is.Exits[client.ExitReload])
}
