package worker_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest/observer"

	"github.com/taskd-dev/taskd/internal/worker"
)

// stderrEntries returns the log entries made of the worker's stderr lines, and the
// summaries of what was dropped, with the number of lines they say were dropped.
func stderrEntries(logs *observer.ObservedLogs) (lines []observer.LoggedEntry, summaries int, dropped int64) {
	for _, e := range logs.All() {
		switch {
		case e.ContextMap()["stream"] == "stderr":
			lines = append(lines, e)
		case strings.HasPrefix(e.Message, "worker stderr: dropped "):
			summaries++
			dropped += e.ContextMap()["dropped_lines"].(int64)
		}
	}
	return lines, summaries, dropped
}

func TestStderrLongLineIsTruncatedAndMarked(t *testing.T) {
	w, logs, err := start(t, "raw", func(c *worker.Config) { c.Stderr.LineMax = 1000 })
	require.NoError(t, err)
	require.True(t, call(t, w, "stderr", 10000).OK)
	var lines []observer.LoggedEntry
	require.Eventually(t, func() bool { lines, _, _ = stderrEntries(logs); return len(lines) > 0 }, 5*time.Second, 5*time.Millisecond)
	require.Len(t, lines, 1)
	assert.Equal(t, strings.Repeat("e", 1000)+"… (truncated, 10000 bytes)", lines[0].Message)

	w.SetStderrLimit(worker.StderrLimit{LineMax: 10})
	require.True(t, call(t, w, "stderr", 20).OK)
	require.Eventually(t, func() bool { lines, _, _ = stderrEntries(logs); return len(lines) == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, strings.Repeat("e", 10)+"… (truncated, 20 bytes)", lines[1].Message, "a new limit applies to a running worker")
}

// TestStderrFloodIsRateLimited: a worker that floods its stderr gets at most its burst,
// and its rate after that, into the log; the rest is counted, summed up in summary lines,
// and the stderr tail still holds its last lines.
func TestStderrFloodIsRateLimited(t *testing.T) {
	const n, rate, burst = 5000, 10, 20
	var counter atomic.Uint64
	w, logs, err := start(t, "raw", func(c *worker.Config) {
		c.Stderr = worker.StderrLimit{LineMax: 200, Rate: rate, Burst: burst}
		c.StderrDropped = &counter
	})
	require.NoError(t, err)
	begin := time.Now()
	require.True(t, call(t, w, "stderrflood", n, 100).OK)
	require.Eventually(t, func() bool { _, s, _ := stderrEntries(logs); return s > 0 }, 10*time.Second, 10*time.Millisecond,
		"a worker fallen silent after a flood gets its summary without waiting for its next line")
	r := call(t, w, "crash") // one more line, "about to crash on purpose", then exit
	<-w.Exited()
	elapsed := time.Since(begin)

	var ee *worker.ExitError
	require.ErrorAs(t, r.Err, &ee)
	require.GreaterOrEqual(t, len(ee.StderrTail), 2)
	tail := ee.StderrTail[len(ee.StderrTail)-2:]
	assert.True(t, strings.HasPrefix(tail[0], "flood line 005000 "), "the tail holds the last lines, logged or not: %q", tail)
	assert.Equal(t, "about to crash on purpose", tail[1])

	lines, summaries, dropped := stderrEntries(logs)
	assert.LessOrEqual(t, float64(len(lines)), burst+rate*elapsed.Seconds()+1, "lines logged")
	assert.EqualValues(t, n+1, int64(len(lines))+dropped, "every line is logged or counted as dropped")
	assert.GreaterOrEqual(t, summaries, 1)
	assert.LessOrEqual(t, float64(summaries), elapsed.Seconds()+1, "at most one summary a second, and one at exit")
	assert.EqualValues(t, dropped, counter.Load())
	assert.True(t, strings.HasPrefix(lines[0].Message, "flood line 000001 "))
}

// TestStderrFloodBeforeReadyKeepsTheReasonInTheTail: a worker that floods its stderr and
// then fails to start still shows why in its StartError.
func TestStderrFloodBeforeReadyKeepsTheReasonInTheTail(t *testing.T) {
	_, logs, err := start(t, "floodexit", func(c *worker.Config) { c.Stderr = worker.StderrLimit{Rate: 1, Burst: 5} })
	var se *worker.StartError
	require.ErrorAs(t, err, &se)
	assert.Contains(t, err.Error(), "fatal: the real reason, after the flood")
	lines, summaries, dropped := stderrEntries(logs)
	assert.LessOrEqual(t, len(lines), 5+3)
	assert.Equal(t, 1, summaries)
	assert.EqualValues(t, 1001, int64(len(lines))+dropped)
}
