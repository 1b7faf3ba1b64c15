package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// workerLog is what the daemon's log says of the workers' stderr, per worker pid: the
// lines logged, and the lines dropped according to the summaries.
type workerLog struct {
	lines     []string
	summaries int
	dropped   int
}

func stderrLog(t *testing.T, d *taskdtest.Daemon) map[int]*workerLog {
	t.Helper()
	out := map[int]*workerLog{}
	for _, line := range strings.Split(d.Logs(), "\n") {
		var e struct {
			Msg     string `json:"msg"`
			PID     int    `json:"pid"`
			Stream  string `json:"stream"`
			Dropped int    `json:"dropped_lines"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.PID == 0 {
			continue
		}
		w := out[e.PID]
		if w == nil {
			w = &workerLog{}
			out[e.PID] = w
		}
		switch {
		case e.Stream == "stderr":
			w.lines = append(w.lines, e.Msg)
		case strings.HasPrefix(e.Msg, "worker stderr: dropped "):
			w.summaries++
			w.dropped += e.Dropped
		}
	}
	return out
}

// TestWorkerStderrFloodIsBoundedInTheLog: a worker that floods its stderr puts its burst,
// and its rate after that, into the daemon's log, lines cut at stderr_line_max and
// marked; the rest is counted in summary lines and the metric, and the caller's error
// still quotes its last stderr line.
func TestWorkerStderrFloodIsBoundedInTheLog(t *testing.T) {
	const n, rate, burst = 3000, 5, 10
	port := freePort(t)
	d := taskdtest.Start(t, fmt.Sprintf("metrics_listen: \"127.0.0.1:%d\"\ninterfaces:\n%s", port,
		taskdtest.WorkerYAML("echo", "raw", fmt.Sprintf("min_idle: 1\nmax_workers: 1\nstderr_line_max: 100\nstderr_rate: %d\nstderr_burst: %d", rate, burst))))
	c := newClient(t, d, "echo")
	var pid int
	require.NoError(t, c.Call(ctxT(t), "pid", &pid))
	begin := time.Now()
	require.NoError(t, c.Call(ctxT(t), "stderrflood", nil, n, 200))
	err := c.Call(ctxT(t), "crash", nil)
	require.ErrorIs(t, err, client.ErrWorkerLost)
	assert.Contains(t, err.Error(), "about to crash on purpose", "the stderr tail holds the last line, logged or not")

	var w *workerLog
	require.Eventually(t, func() bool {
		w = stderrLog(t, d)[pid]
		return w != nil && len(w.lines)+w.dropped == n+1
	}, 10*time.Second, 10*time.Millisecond, "every line is logged or counted as dropped")
	elapsed := time.Since(begin)
	assert.LessOrEqual(t, float64(len(w.lines)), burst+rate*elapsed.Seconds()+1, "lines logged")
	assert.GreaterOrEqual(t, w.summaries, 1)
	assert.True(t, strings.HasPrefix(w.lines[0], "flood line 000001 "), w.lines[0])
	assert.True(t, strings.HasSuffix(w.lines[0], "x… (truncated, 200 bytes)"), w.lines[0])
	assert.Len(t, w.lines[0], 100+len("… (truncated, 200 bytes)"))

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), fmt.Sprintf("taskd_worker_stderr_dropped_lines_total{interface=\"echo\"} %d\n", w.dropped))
}

// TestStartFailureAfterStderrFloodQuotesTheReason: a worker that floods its stderr and then
// cannot start logs little of it, and the checkout's error still says why it failed.
func TestStartFailureAfterStderrFloodQuotesTheReason(t *testing.T) {
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("boom", "floodexit", "min_idle: 0\nstderr_rate: 1\nstderr_burst: 5"))
	c := newClient(t, d, "boom", func(cfg *client.Config) { cfg.Timeout = 10 * time.Second })
	_, err := c.Checkout(ctxT(t))
	require.ErrorIs(t, err, client.ErrUnavailable)
	assert.Contains(t, err.Error(), "fatal: the real reason, after the flood")
	require.Eventually(t, func() bool { return len(stderrLog(t, d)) > 0 }, 10*time.Second, 10*time.Millisecond)
	for pid, w := range stderrLog(t, d) {
		assert.LessOrEqual(t, len(w.lines), 5+2, "worker %d", pid)
	}
}

// TestWorkerKilledFromOutsideIsNotTakenForTaskds: a worker SIGKILLed from outside while
// calls are being written to it is reported, to the caller, in the log and in the exit
// reasons, as crashed (killed from outside), never as killed by taskd. Repeated to meet
// the race between the kill, the writes to its stdin and the reaping.
func TestWorkerKilledFromOutsideIsNotTakenForTaskds(t *testing.T) {
	const rounds = 8
	d := taskdtest.Start(t, "interfaces:\n"+taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 1"))
	c := newClient(t, d, "echo")
	big := strings.Repeat("x", 64<<10)
	for i := range rounds {
		co, err := c.Checkout(ctxT(t))
		require.NoError(t, err)
		var pid int
		require.NoError(t, co.Call(ctxT(t), "pid", &pid))
		var calls []*client.Pending
		for j := range 40 {
			if j == 20 {
				require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
			}
			calls = append(calls, co.Go("echo", big))
		}
		var lost error
		for _, p := range calls {
			if err := p.Wait(ctxT(t), nil); err != nil && lost == nil {
				lost = err
			}
		}
		co.Release()
		require.ErrorIs(t, lost, client.ErrWorkerLost, "round %d", i)
		assert.NotContains(t, lost.Error(), "killed by taskd", "round %d", i)
		assert.NotContains(t, lost.Error(), "being stopped", "round %d", i)
		assert.Contains(t, lost.Error(), "killed by signal SIGKILL from outside taskd", "round %d", i)
	}
	require.Eventually(t, func() bool { return status(t, c, "echo").Exits[client.ExitCrashed] == rounds }, 10*time.Second, 10*time.Millisecond)
	exits := status(t, c, "echo").Exits
	assert.Zero(t, exits[client.ExitKilled])
	assert.NotContains(t, d.Logs(), "killed by taskd")
}
