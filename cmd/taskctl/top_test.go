package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestRenderTop(t *testing.T) {
	prev := client.DaemonStatus{Version: "1.0.0", PID: 7, Uptime: 10 * time.Second, Interfaces: []client.InterfaceStatus{
		{Name: "passwd", Checkouts: 100, Calls: 300, CallLatency: &client.LatencyHistogram{Bounds: []float64{.001, .01, .1}, Counts: []uint64{10, 20, 20}, Total: 20}},
		{Name: "thumbs"},
	}}
	cur := client.DaemonStatus{Version: "1.0.0", PID: 7, Uptime: 12 * time.Second, Interfaces: []client.InterfaceStatus{
		{Name: "passwd", Live: 2, Idle: 1, Busy: 1, Queued: 3, Checkouts: 110, Calls: 340,
			CallLatency: &client.LatencyHistogram{Bounds: []float64{.001, .01, .1}, Counts: []uint64{30, 58, 60}, Total: 60}, Workers: []client.WorkerStatus{
				{ID: "passwd-1", PID: 101, State: "busy", Method: "hash", CallRunning: 1500 * time.Millisecond, RSS: 12 << 20, Checkouts: 9},
				{ID: "passwd-2", PID: 102, State: "idle", Checkouts: 4},
			}},
		{Name: "thumbs", Starting: 1},
	}}
	var buf bytes.Buffer
	require.NoError(t, renderTop(&buf, &prev, cur))
	want := `taskd 1.0.0, pid 7, up 12s

INTERFACE  LIVE  IDLE  BUSY  STARTING  RETIRING  QUEUED  CHECKOUTS/S  CALLS/S  P50  P99
passwd     2     1     1     0         0         3       5.0          20.0     1ms  82ms
thumbs     0     0     0     1         0         0       0.0          0.0      -    -

INTERFACE  WORKER    PID  STATE  METHOD  RUNNING FOR  RSS       CHECKOUTS
passwd     passwd-1  101  busy   hash    1.5s         12.0 MiB  9
passwd     passwd-2  102  idle   -       -            -         4
`
	assert.Equal(t, want, buf.String())

	buf.Reset()
	require.NoError(t, renderTop(&buf, nil, client.DaemonStatus{Version: "1.0.0", PID: 7}))
	assert.Contains(t, buf.String(), "(no interfaces)")
	assert.Contains(t, buf.String(), "(no workers running)")

	restarted := cur
	restarted.PID = 8
	buf.Reset()
	require.NoError(t, renderTop(&buf, &prev, restarted))
	assert.Regexp(t, `(?m)^passwd\s+2\s+1\s+1\s+0\s+0\s+3\s+-\s+-\s+-\s+-$`, buf.String(), "no rates across a restart")
}

// TestTopAndLogsRealDaemon: `taskctl top -n 2` against a real taskd prints two snapshots
// (not a terminal: separated by a blank line, no escapes), the second with rates; `taskctl
// logs` prints a worker's stderr line with its worker id and pid, as text and as JSON.
func TestTopAndLogsRealDaemon(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2"))
	c, err := client.New(client.Config{Addr: d.Addr, Interface: "echo"})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pid int
	require.NoError(t, c.Call(ctx, "pid", &pid))
	require.NoError(t, c.Call(ctx, "stderr", nil, 9))
	st, err := c.DaemonStatus(ctx)
	require.NoError(t, err)
	require.Len(t, st.Interfaces, 1)
	require.NotNil(t, st.Interfaces[0].CallLatency, "the daemon reports its call-time histogram")
	assert.Equal(t, uint64(2), st.Interfaces[0].CallLatency.Total)
	p50, ok := st.Interfaces[0].CallLatency.Quantile(.5, nil)
	assert.True(t, ok)
	assert.Positive(t, p50)

	taskctl := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(ctx, append([]string{"--addr", d.Addr}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, out, errs := taskctl("top", "-n", "2", "--interval", "200ms")
	require.Equal(t, exitOK, code, errs)
	assert.NotContains(t, out, "\x1b[", "no escapes when not on a terminal")
	snaps := strings.Split(out, "\n\ntaskd ")
	require.Len(t, snaps, 2, out)
	assert.Regexp(t, `(?m)^echo\s+1\s+1\s+0\s+0\s+0\s+0\s+-\s+-\s+-\s+-$`, snaps[0], "the first snapshot has no rates")
	assert.Regexp(t, `(?m)^echo\s+1\s+1\s+0\s+0\s+0\s+0\s+\d+\.\d\s+\d+\.\d\s+\S+\s+\S+$`, snaps[1], "the second has rates")
	assert.Regexp(t, `(?m)^echo\s+echo-\d+\s+\d+\s+idle\s+-\s+-\s+\d+\.\d [KMG]iB\s+\d+$`, snaps[1])

	var lines string
	require.Eventually(t, func() bool {
		code, lines, errs = taskctl("logs", "echo")
		require.Equal(t, exitOK, code, errs)
		return strings.Contains(lines, "eeeeeeeee")
	}, 10*time.Second, 10*time.Millisecond)
	assert.Regexp(t, `(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} echo-\d+ `+strconv.Itoa(pid)+` eeeeeeeee$`, lines)

	code, out, errs = taskctl("-o", "json", "logs")
	require.Equal(t, exitOK, code, errs)
	var l client.LogLine
	require.NoError(t, json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &l), out)
	assert.Equal(t, client.LogLine{Time: l.Time, Interface: "echo", Worker: l.Worker, PID: pid, Line: "eeeeeeeee"}, l)

	code, _, errs = taskctl("logs", "nope")
	assert.Equal(t, exitError, code)
	assert.Contains(t, errs, "unknown interface")
}
