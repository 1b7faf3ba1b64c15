package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/bench"
	"github.com/taskd-dev/taskd/internal/taskdtest"
)

func TestBenchFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"bench", "echo"}, "at least 2"},
		{[]string{"bench", "-c", "0", "echo", "echo"}, "-c 0: want 1 to 10000"},
		{[]string{"bench", "-c", "10001", "echo", "echo"}, "-c 10001"},
		{[]string{"bench", "-n", "10000001", "echo", "echo"}, "-n 10000001: want 1 to 10000000 calls"},
		{[]string{"bench", "-n", "0", "echo", "echo"}, "-n 0"},
		{[]string{"bench", "-d", "11m", "echo", "echo"}, "-d 11m0s: want a positive duration up to 10m0s"},
		{[]string{"bench", "-d", "0s", "echo", "echo"}, "-d 0s"},
		{[]string{"bench", "-n", "5", "-d", "1s", "echo", "echo"}, "not both"},
		{[]string{"bench", "--pipeline", "-1", "echo", "echo"}, "--pipeline -1"},
		{[]string{"bench", "--pipeline", "10001", "echo", "echo"}, "--pipeline 10001"},
		{[]string{"bench", "--oneshot", "--pipeline", "4", "echo", "echo"}, "cannot be pipelined"},
		{[]string{"bench", "-c", "x", "echo", "echo"}, "invalid argument"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		assert.Equal(t, exitUsage, code, "%v: %s", tc.args, errb.String())
		assert.Contains(t, errb.String(), tc.msg, "%v", tc.args)
		assert.Empty(t, out.String(), "%v", tc.args)
	}
}

func TestBenchReport(t *testing.T) {
	var res bench.Result
	for i := 1; i <= 1000; i++ {
		res.Latency.Record(time.Duration(i) * time.Microsecond)
	}
	res.Calls, res.Elapsed = 1000, 2*time.Second
	f := &benchFlags{concurrency: 4, pipeline: 8}
	rep := newBenchReport("echo", "echo", f, &res)
	assert.Equal(t, "pipeline", rep.Mode)
	assert.Equal(t, 8, rep.Pipeline)
	assert.InDelta(t, 500, rep.CallsPerSec, 1e-9)
	l := rep.LatencyUS
	assert.InDelta(t, 500, l.P50, 5)
	assert.InDelta(t, 900, l.P90, 9)
	assert.InDelta(t, 990, l.P99, 10)
	assert.InDelta(t, 999, l.P999, 10)
	assert.Equal(t, 1000.0, l.Max)

	var buf bytes.Buffer
	require.NoError(t, renderBench(&buf, benchReport{Interface: "passwd", Method: "hash", Mode: "held", Callers: 2, Pipeline: 1,
		Calls: 1234, DurationSec: 1.5, CallsPerSec: 822.666, LatencyUS: benchLatencies{P50: 1000, P90: 2000.4, P99: 3000, P999: 4000, Max: 12345.6}}))
	assert.Equal(t, `passwd.hash: 2 caller(s), one checkout held by each caller, one call in flight
calls       1234 in 1.5s
throughput  822.7 calls/s
latency     p50 1ms   p90 2ms   p99 3ms   p99.9 4ms   max 12.346ms
`, buf.String())

	buf.Reset()
	require.NoError(t, renderBench(&buf, benchReport{Mode: "oneshot", Interrupted: true}))
	assert.Contains(t, buf.String(), "interrupted")
	assert.Contains(t, buf.String(), "one-shot calls")

	b, err := json.Marshal(rep)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	assert.Contains(t, m["latency_us"], "p99.9")
	assert.NotContains(t, m, "interrupted")
}

func TestBenchProgress(t *testing.T) {
	var buf bytes.Buffer
	progressLine(&buf)(1500, 1500*time.Millisecond)
	assert.Equal(t, "\r\x1b[K1500 calls, 1000 calls/s, 2s", buf.String())

	assert.False(t, isTerminal(&buf))
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	assert.False(t, isTerminal(w), "a pipe is not a terminal")
}

// TestBenchModes runs each mode against the fake daemon of taskctl_test.go, with one caller
// (the fake gives every checkout the same id). stderr is not a terminal, so bench prints no
// progress.
func TestBenchModes(t *testing.T) {
	addr := miniDaemon(t)
	for _, tc := range []struct {
		flags []string
		mode  string
	}{
		{nil, "held"},
		{[]string{"--oneshot"}, "oneshot"},
		{[]string{"--pipeline", "7"}, "pipeline"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"--addr", addr, "-o", "json", "bench", "-n", "50"}, tc.flags...)
		code := run(context.Background(), append(args, "echo", "echo", "x", "42"), &out, &errb)
		require.Equal(t, exitOK, code, "%v: %s", tc.flags, errb.String())
		assert.Empty(t, errb.String(), "no progress when stderr is not a terminal")
		var rep benchReport
		require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
		assert.Equal(t, tc.mode, rep.Mode)
		assert.EqualValues(t, 50, rep.Calls)
		assert.Equal(t, 1, rep.Callers)
	}

	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--addr", addr, "bench", "-n", "3", "echo", "raise"}, &out, &errb)
	assert.Equal(t, exitError, code)
	assert.Contains(t, errb.String(), "bench stopped after 0 calls")
	assert.Contains(t, errb.String(), "boom")
}

func TestBenchRealDaemon(t *testing.T) {
	echo := taskdtest.Binary(t, "examples/echo")
	d := taskdtest.Start(t, fmt.Sprintf("interfaces:\n  echo:\n    command: [%q]\n    min_idle: 4\n    max_workers: 4\n", echo))

	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--addr", d.Addr, "-o", "json", "bench", "-n", "200", "-c", "4", "echo", "echo", "hello", `{"n":1}`}, &out, &errb)
	require.Equal(t, exitOK, code, errb.String())
	var rep benchReport
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep), out.String())
	assert.Equal(t, benchReport{Interface: "echo", Method: "echo", Mode: "held", Callers: 4, Pipeline: 1, Calls: 200},
		benchReport{Interface: rep.Interface, Method: rep.Method, Mode: rep.Mode, Callers: rep.Callers, Pipeline: rep.Pipeline, Calls: rep.Calls})
	assert.Positive(t, rep.DurationSec)
	assert.Positive(t, rep.CallsPerSec)
	l := rep.LatencyUS
	assert.Positive(t, l.P50)
	assert.True(t, l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max, "percentiles out of order: %+v", l)

	out.Reset()
	code = run(context.Background(), []string{"--addr", d.Addr, "bench", "-n", "100", "-c", "2", "--pipeline", "10", "echo", "echo"}, &out, &errb)
	require.Equal(t, exitOK, code, errb.String())
	assert.Contains(t, out.String(), "echo.echo: 2 caller(s), one checkout held by each caller, 10 pipelined calls per batch\ncalls       100 in ")

	errb.Reset()
	code = run(context.Background(), []string{"--addr", d.Addr, "bench", "-n", "10", "-c", "5", "echo", "echo"}, &out, &errb)
	assert.Equal(t, exitError, code)
	assert.Contains(t, errb.String(), "max_workers 4")
}
