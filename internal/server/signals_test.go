package server_test

import (
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// TestPanicInSessionIsLoggedAndExits: a panic in a session's goroutine (injected through
// a test hook built into this taskd only) is logged as one entry with its stack, and taskd
// exits with status 2, its workers with it.
func TestPanicInSessionIsLoggedAndExits(t *testing.T) {
	bin, err := taskdtest.BuildTagged("cmd/taskd", "taskd_panichook")
	require.NoError(t, err)
	d := taskdtest.StartWith(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 2"),
		taskdtest.Options{Wait: true, Bin: bin})
	c := newClient(t, d, "echo")
	require.Eventually(t, func() bool { return status(t, c, "echo").Idle == 2 }, 20*time.Second, 5*time.Millisecond)
	workers := d.Workers()
	require.NotEmpty(t, workers)

	dialRaw(t, d).send(`{"t":"panic","id":1}`)
	select {
	case <-d.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("taskd did not exit after a panic in a session")
	}
	var ee *exec.ExitError
	require.True(t, errors.As(d.ExitErr(), &ee), "exit: %v", d.ExitErr())
	assert.Equal(t, 2, ee.ExitCode())
	logs := d.Logs()
	assert.Contains(t, logs, `"msg":"panic: taskd is exiting (a bug: please report it with this entry)"`)
	assert.Contains(t, logs, `"goroutine":"session"`)
	assert.Contains(t, logs, `injected by a client's \"panic\" message`)
	assert.Contains(t, logs, "internal/server.(*session).handle", "the stack is logged")
	taskdtest.RequireGone(t, workers, 10*time.Second)
}

// TestSIGQUITDumpsStacksAndKeepsRunning: SIGQUIT logs every goroutine's stack, and taskd
// serves on. SIGPIPE (as a write to a closed stderr pipe raises) does not kill it either.
func TestSIGQUITDumpsStacksAndKeepsRunning(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1"))
	c := newClient(t, d, "echo")
	require.NoError(t, d.Signal(syscall.SIGQUIT))
	require.Eventually(t, func() bool { return strings.Contains(d.Logs(), "SIGQUIT: the stacks of all goroutines") }, 10*time.Second, 5*time.Millisecond)
	assert.Contains(t, d.Logs(), "goroutine 1 [")
	require.NoError(t, d.Signal(syscall.SIGPIPE))
	require.NoError(t, c.Call(ctxT(t), "echo", nil, "still here"))
	select {
	case <-d.Exited():
		t.Fatalf("taskd exited: %v", d.ExitErr())
	default:
	}
	require.NoError(t, d.Stop(30*time.Second))
}
