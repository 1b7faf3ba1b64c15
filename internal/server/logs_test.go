package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// findLine returns the first line of lines whose text is text.
func findLine(lines []client.LogLine, text string) (client.LogLine, bool) {
	for _, l := range lines {
		if l.Line == text {
			return l, true
		}
	}
	return client.LogLine{}, false
}

// TestLogsKeepsWorkersStderr: the stderr lines a worker writes are kept, as logged (cut
// at stderr_line_max), with the worker's id and pid, per interface and for all; an
// unknown interface is refused. The status counts the calls and reports each worker's
// RSS.
func TestLogsKeepsWorkersStderr(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1\nstderr_line_max: 100")+
		taskdtest.WorkerYAML("other", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	var pid int
	require.NoError(t, c.Call(ctxT(t), "pid", &pid))
	require.NoError(t, c.Call(ctxT(t), "stderr", nil, 12))
	require.NoError(t, c.Call(ctxT(t), "stderr", nil, 300))
	require.NoError(t, newClient(t, d, "other").Call(ctxT(t), "stderr", nil, 5))

	var lines []client.LogLine
	require.Eventually(t, func() bool {
		var err error
		lines, err = c.Logs(ctxT(t), "echo")
		require.NoError(t, err)
		_, ok := findLine(lines, "eeeeeeeeeeee")
		return ok && len(lines) >= 2
	}, 10*time.Second, 10*time.Millisecond)
	l, _ := findLine(lines, "eeeeeeeeeeee")
	assert.Equal(t, pid, l.PID)
	assert.Equal(t, "echo", l.Interface)
	assert.True(t, strings.HasPrefix(l.Worker, "echo-"), l.Worker)
	assert.WithinDuration(t, time.Now(), l.Time, 20*time.Second)
	_, ok := findLine(lines, strings.Repeat("e", 100)+"… (truncated, 300 bytes)")
	assert.True(t, ok, "a long line as logged: cut at stderr_line_max: %v", lines)
	for _, l := range lines {
		assert.Equal(t, "echo", l.Interface, "only echo's lines")
	}

	require.Eventually(t, func() bool {
		all, err := c.Logs(ctxT(t), "")
		require.NoError(t, err)
		_, ok := findLine(all, "eeeee")
		return ok && len(all) >= len(lines)+1
	}, 10*time.Second, 10*time.Millisecond, "all interfaces")

	_, err := c.Logs(ctxT(t), "nope")
	require.ErrorIs(t, err, client.ErrUnknownInterface)

	is := status(t, c, "echo")
	assert.GreaterOrEqual(t, is.Calls, uint64(3))
	require.NotEmpty(t, is.Workers)
	assert.Greater(t, is.Workers[0].RSS, int64(0), "RSS read at the status request")
}

// TestFollowLogs: a follow gets the backlog, then a line written after it started, until
// its context ends.
func TestFollowLogs(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	require.NoError(t, c.Call(ctxT(t), "stderr", nil, 3))
	require.Eventually(t, func() bool {
		lines, err := c.Logs(ctxT(t), "echo")
		require.NoError(t, err)
		_, ok := findLine(lines, "eee")
		return ok
	}, 10*time.Second, 10*time.Millisecond)

	ctx, cancel := context.WithCancel(ctxT(t))
	got := make(chan client.LogLine, 100)
	done := make(chan error, 1)
	go func() { done <- c.FollowLogs(ctx, "echo", func(l client.LogLine) { got <- l }) }()
	next := func() client.LogLine {
		select {
		case l := <-got:
			return l
		case err := <-done:
			t.Fatalf("FollowLogs returned: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no line followed")
		}
		return client.LogLine{}
	}
	assert.Equal(t, "eee", next().Line, "the backlog first")
	require.NoError(t, c.Call(ctxT(t), "stderr", nil, 7))
	l := next()
	assert.Equal(t, "eeeeeee", l.Line, "a line written after the follow began")
	assert.NotZero(t, l.PID)
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("FollowLogs did not return when its context ended")
	}
}

// TestSlowLogFollowerDoesNotBlockWorkers: a follower that reads nothing while a worker
// floods its stderr holds up neither the worker nor the daemon, keeps its connection, and
// is told, once it reads, how many lines it missed. abandon ends the follow.
func TestSlowLogFollowerDoesNotBlockWorkers(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw",
		"min_idle: 1\nmax_workers: 1\nstderr_rate: 0\nstderr_line_max: 0"))
	r := dialRaw(t, d)
	r.sc.Buffer(make([]byte, 64<<10), 16<<20)
	r.send(`{"t":"logs","id":5,"iface":"echo","follow":true}`)
	first := r.recv()
	require.Equal(t, "logs", first["t"])
	require.EqualValues(t, 5, first["id"])

	c := newClient(t, d, "echo")
	const n, size = 20000, 1000 // 20 MB of stderr, never read by the follower meanwhile
	begin := time.Now()
	require.NoError(t, c.Call(ctxT(t), "stderrflood", nil, n, size))
	require.NoError(t, c.Call(ctxT(t), "echo", nil, "still serving"))
	t.Logf("flood of %d lines took %v", n, time.Since(begin))

	// Now read: the lines that made it, and somewhere a count of those dropped.
	var seen, dropped int
	for seen+dropped < n {
		m := r.recv()
		if m["t"] != "logs" {
			continue
		}
		lines, _ := m["lines"].([]any)
		seen += len(lines)
		if x, ok := m["dropped"].(float64); ok {
			dropped += int(x)
		}
	}
	assert.Equal(t, n, seen+dropped, "every line is sent or counted as dropped")
	assert.Positive(t, dropped, "a follower that does not read loses lines")

	// abandon ends the follow: nothing more comes, while the connection serves on.
	r.send(`{"t":"abandon","id":5}`)
	r.send(`{"t":"ping","id":6}`)
	for {
		m := r.recv()
		if m["t"] == "pong" {
			break
		}
	}
	require.NoError(t, c.Call(ctxT(t), "stderr", nil, 4))
	time.Sleep(200 * time.Millisecond) // a line that would come, if the follow went on
	r.send(`{"t":"ping","id":7}`)
	m := r.recv()
	b, _ := json.Marshal(m)
	assert.Equal(t, "pong", m["t"], fmt.Sprintf("no logs after abandon: %s", b))
}
