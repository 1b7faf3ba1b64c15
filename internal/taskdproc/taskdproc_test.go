package taskdproc_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/taskdproc"
	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestMain(m *testing.M) { taskdtest.Main(m) }

// idle is a config whose one interface starts no worker until asked.
var idle = "interfaces:\n" + taskdtest.WorkerYAML("w", "raw", "min_idle: 0")

func start(t *testing.T, o taskdproc.Options) *taskdproc.Daemon {
	t.Helper()
	o.Bin = taskdtest.Binary(t, "cmd/taskd")
	d, err := taskdproc.Start(context.Background(), o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Stop(10 * time.Second) })
	return d
}

func TestStartStop(t *testing.T) {
	d := start(t, taskdproc.Options{YAML: "interfaces:\n" + taskdtest.WorkerYAML("echo", "raw", "min_idle: 1")})
	assert.False(t, d.Ready.Before(d.Started), "Ready is set, after Started")
	assert.Equal(t, "unix:"+filepath.Join(d.Dir, "taskd.sock"), d.Addr)
	c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Call(context.Background(), "echo", nil))
	workers := d.Workers()
	require.Len(t, workers, 1)
	require.Contains(t, d.Logs(), "taskd starting")

	require.NoError(t, d.Stop(10*time.Second))
	assert.NoError(t, d.Stop(time.Second), "a second Stop returns the first one's result")
	assert.False(t, procfs.Alive(workers[0]), "the worker is gone")
	_, err = os.Stat(d.Dir)
	assert.ErrorIs(t, err, os.ErrNotExist, "Stop removes the directory Start made")
	assert.Contains(t, d.Logs(), "taskd starting", "the log outlives the directory")
}

func TestStartFailsWithTheLog(t *testing.T) {
	d, err := taskdproc.Start(context.Background(), taskdproc.Options{
		Bin:  taskdtest.Binary(t, "cmd/taskd"),
		YAML: "interfaces:\n  w:\n    command: [\"/bin/true\"]\n    min_idel: 1\n",
	})
	require.Error(t, err)
	assert.Nil(t, d)
	assert.Contains(t, err.Error(), "exited before it reported READY=1")
	assert.Contains(t, err.Error(), "min_idel", "the error quotes taskd's complaint")
}

func TestCallersDirStays(t *testing.T) {
	dir := taskdtest.TempDir(t)
	d := start(t, taskdproc.Options{YAML: idle, Dir: dir, NoWait: true})
	assert.True(t, d.Ready.IsZero(), "NoWait does not wait for READY=1")
	require.Eventually(t, func() bool { _, err := os.Stat(d.Socket); return err == nil }, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, d.Stop(10*time.Second))
	_, err := os.Stat(d.Config)
	assert.NoError(t, err, "a directory the caller gave stays")
}

func TestStopReportsWhatOutlivesTaskd(t *testing.T) {
	sh, err1 := exec.LookPath("sh")
	setsid, err2 := exec.LookPath("setsid")
	sleep, err3 := exec.LookPath("sleep")
	if err1 != nil || err2 != nil || err3 != nil {
		t.Skip("SKIPPING: needs sh, setsid and sleep")
	}
	// A worker that leaves a process in a session of its own, out of reach of taskd's
	// kill of the worker's process group.
	script := fmt.Sprintf("%s %s 60 </dev/null >/dev/null 2>&1 & exec \"$0\"", setsid, sleep)
	yaml := fmt.Sprintf("interfaces:\n  w:\n    command: [%q, \"-c\", %q, %q]\n    env: {TASKD_TEST_WORKER: raw, GORACE: \"atexit_sleep_ms=0\"}\n    min_idle: 1\n",
		sh, script, os.Args[0])
	d := start(t, taskdproc.Options{YAML: yaml})
	var kids []int
	require.Eventually(t, func() bool {
		kids = taskdproc.Descendants(d.PID())
		for _, p := range kids {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); string(comm) == "sleep\n" {
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond, "the worker's sleep")

	err := d.Stop(10 * time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "outlived it")
	for _, p := range kids {
		require.Eventually(t, func() bool { return !procfs.Alive(p) }, 5*time.Second, 5*time.Millisecond,
			"Stop killed what was left: %d", p)
	}
}

func TestStopAfterExit(t *testing.T) {
	d := start(t, taskdproc.Options{YAML: idle})
	require.NoError(t, d.Signal(syscall.SIGKILL))
	<-d.Exited()
	err := d.Stop(time.Second)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "signal: killed")
	_, err = os.Stat(d.Dir)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

// TestNotificationsAfterStop: once the daemon has exited, Notifications has everything it
// sent, the last ones (STOPPING=1) included.
func TestNotificationsAfterStop(t *testing.T) {
	d := start(t, taskdproc.Options{YAML: idle})
	assert.Contains(t, d.Notifications(), "READY=1")
	require.NoError(t, d.Stop(10*time.Second))
	assert.Contains(t, d.Notifications(), "STOPPING=1")
}

// TestSockets: taskd serves a listening socket handed to it as systemd's socket
// activation does, LISTEN_PID included (taskd ignores LISTEN_FDS meant for another pid).
func TestSockets(t *testing.T) {
	dir := taskdtest.TempDir(t)
	path := filepath.Join(dir, "taskd.sock")
	f := taskdtest.ListeningSocket(t, path, "taskd.socket")
	d := start(t, taskdproc.Options{YAML: idle, Dir: dir, Sockets: []*os.File{f}})
	c, err := client.New(client.Config{Addr: d.Addr, Interface: "w"})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Call(context.Background(), "echo", nil))
	assert.Contains(t, d.Logs(), "using the socket passed by systemd")
}
