package main

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// TestSteerRealDaemon: drain, status, resume, scale and kill against a real taskd, with
// their output and exit codes.
func TestSteerRealDaemon(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2"))
	taskctl := func(a ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), append([]string{"--addr", d.Addr}, a...), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errs := taskctl("drain", "echo")
	assert.Equal(t, exitOK, code, errs)
	assert.Contains(t, out, `interface "echo" drained`)
	_, out, _ = taskctl("status")
	assert.Regexp(t, `(?m)^echo \(drained\)\s`, out)
	code, _, errs = taskctl("call", "echo", "echo", "x")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, "interface_draining")
	code, out, errs = taskctl("resume", "echo")
	assert.Equal(t, exitOK, code, errs)
	assert.Contains(t, out, "resumed")
	code, _, errs = taskctl("call", "echo", "echo", "x")
	assert.Equal(t, exitOK, code, errs)

	code, _, errs = taskctl("drain", "nope")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, "unknown interface")
	code, _, _ = taskctl("scale", "echo", "--min", "3", "--max", "2")
	assert.Equal(t, exitUsage, code)
	code, out, errs = taskctl("scale", "echo", "--min", "0", "--max", "3")
	assert.Equal(t, exitOK, code, errs)
	assert.Contains(t, out, "max_workers 2 → 3")

	c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo", Timeout: 20 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	co, err := c.Checkout(context.Background())
	require.NoError(t, err)
	defer co.Release()
	var pid int
	require.NoError(t, co.Call(context.Background(), "pid", &pid))
	code, out, errs = taskctl("kill", strconv.Itoa(pid))
	assert.Equal(t, exitOK, code, errs)
	assert.Contains(t, out, "killed; its checkout lost its worker")
	taskdtest.RequireGone(t, []int{pid}, 10*time.Second)
	assert.ErrorIs(t, co.Call(context.Background(), "pid", &pid), client.ErrWorkerLost)
	code, _, errs = taskctl("kill", strconv.Itoa(pid))
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, "no worker")
}
