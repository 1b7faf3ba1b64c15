package server_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
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

// TestSocketActivationRestartRefusesNoConnection restarts taskd three times on a socket
// that the test holds, as a systemd socket unit does, while callers dial the socket and
// make one-shot calls: no dial fails, and a call fails only with a typed error (it was in
// flight when taskd stopped). Two callers make quick calls; two make calls longer than
// shutdown_grace plus the 2s a stopping worker is given, which each stop cuts off.
func TestSocketActivationRestartRefusesNoConnection(t *testing.T) {
	dir := taskdtest.TempDir(t)
	sock := filepath.Join(dir, "taskd.sock") // the listen address of the config taskdtest writes
	f := taskdtest.ListeningSocket(t, sock, "taskd.socket")
	yaml := "shutdown_grace: 100ms\ninterfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 2\nmax_workers: 4")
	start := func() *taskdtest.Daemon {
		return taskdtest.StartWith(t, yaml, taskdtest.Options{Dir: dir, Wait: true, Sockets: []*os.File{f}})
	}
	d := start()
	c := newClient(t, d, "echo", func(c *client.Config) { c.Timeout = 30 * time.Second })

	var ok, slow, typed atomic.Int64
	var mu sync.Mutex
	var refused, failed []error // guarded by mu
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if conn, err := net.Dial("unix", sock); err != nil {
					mu.Lock()
					refused = append(refused, err)
					mu.Unlock()
				} else {
					conn.Close()
				}
				var out []int
				var err error
				if i%2 == 0 {
					err = c.Call(context.Background(), "echo", &out, i)
				} else {
					err = c.Call(context.Background(), "sleep", nil, 3000)
					out = []int{i}
				}
				switch {
				case err == nil && slices.Equal(out, []int{i}):
					if i%2 == 0 {
						ok.Add(1)
					} else {
						slow.Add(1)
					}
				case errors.Is(err, client.ErrWorkerLost) || errors.Is(err, client.ErrShuttingDown):
					typed.Add(1)
				default:
					mu.Lock()
					failed = append(failed, err)
					mu.Unlock()
				}
			}
		}()
	}
	// Each daemon serves some calls before it is stopped: the stop catches calls in flight.
	served := func() {
		n := ok.Load()
		require.Eventually(t, func() bool { return ok.Load() >= n+50 }, 30*time.Second, time.Millisecond,
			"calls succeed on taskd pid %d", d.PID())
	}
	served()
	for range 3 {
		require.NoError(t, d.Stop(20*time.Second))
		d = start()
		served()
	}
	close(stop)
	wg.Wait()
	require.NoError(t, d.Stop(20*time.Second))
	t.Logf("calls: %d quick and %d slow succeeded, %d failed with ErrWorkerLost or ErrShuttingDown", ok.Load(), slow.Load(), typed.Load())
	assert.Empty(t, refused, "dials refused while taskd restarted")
	assert.Empty(t, failed, "calls that failed with an untyped error")
	assert.Positive(t, typed.Load(), "stops cut off calls in flight")
}

// TestSocketActivationLeavesTheSocketToSystemd: taskd serves the sockets systemd passes —
// the one of its listen address without chmodding it to socket_mode, and one not in the
// config too — and leaves their files and their listening to systemd when it stops.
func TestSocketActivationLeavesTheSocketToSystemd(t *testing.T) {
	dir := taskdtest.TempDir(t)
	sock, extra := filepath.Join(dir, "taskd.sock"), filepath.Join(dir, "extra.sock")
	files := []*os.File{
		taskdtest.ListeningSocket(t, sock, "taskd.socket"),
		taskdtest.ListeningSocket(t, extra, "extra"),
	}
	d := taskdtest.StartWith(t, "socket_mode: \"0660\"\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"),
		taskdtest.Options{Dir: dir, Wait: true, Sockets: files})
	for _, addr := range []string{"unix:" + sock, "unix:" + extra} {
		c, err := client.New(client.Config{Addr: addr, Interface: "echo", Timeout: 20 * time.Second})
		require.NoError(t, err)
		var out []string
		require.NoError(t, c.Call(ctxT(t), "echo", &out, "hi"), addr)
		assert.Equal(t, []string{"hi"}, out)
		c.Close()
	}
	logs := d.Logs()
	assert.Contains(t, logs, "using the socket passed by systemd")
	assert.Contains(t, logs, "serving a socket passed by systemd that is not in listen")
	assert.Contains(t, logs, `"name":"extra"`)
	assert.NotContains(t, logs, "replaced stale socket")
	fi, err := os.Lstat(sock)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "socket_mode is not applied to systemd's socket")

	require.NoError(t, d.Stop(20*time.Second))
	for _, path := range []string{sock, extra} {
		fi, err := os.Lstat(path)
		require.NoError(t, err, "taskd left %s in place", path)
		assert.Equal(t, os.ModeSocket, fi.Mode().Type())
		conn, err := net.Dial("unix", path)
		require.NoError(t, err, "the socket still listens (systemd's descriptor) after taskd stopped")
		conn.Close()
	}
}

// TestSystemdNotifications: READY=1 comes with a STATUS= summary, and STOPPING=1 is sent
// when the drain begins, before the held checkout ends and taskd exits.
func TestSystemdNotifications(t *testing.T) {
	d := taskdtest.Start(t, "shutdown_grace: 20s\ninterfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	notes := d.Notifications()
	require.Contains(t, notes, "READY=1")
	i := slices.IndexFunc(notes, func(s string) bool { return strings.HasPrefix(s, "STATUS=") })
	require.GreaterOrEqual(t, i, 0, "STATUS= in %q", notes)
	assert.Regexp(t, `^STATUS=serving: interfaces 1, workers \d+ \(\d+ idle\), checkouts 0 held, 0 waiting$`, notes[i])

	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, d.Signal(syscall.SIGTERM))
	require.Eventually(t, func() bool { return slices.Contains(d.Notifications(), "STOPPING=1") }, 10*time.Second, time.Millisecond)
	select {
	case <-d.Exited():
		t.Fatal("taskd exited while a checkout was held and shutdown_grace had not passed")
	default:
	}
	co.Release()
	select {
	case <-d.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("taskd did not exit after its checkout ended")
	}
	require.NoError(t, d.ExitErr())
	notes = d.Notifications()
	assert.Equal(t, "STATUS=stopping: draining checkouts for up to shutdown_grace (20s)", notes[len(notes)-1])
}
