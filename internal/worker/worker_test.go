package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/internal/worker"
)

func TestMain(m *testing.M) {
	taskdtest.MaybeRunWorker()
	goleak.VerifyTestMain(m)
}

func start(t testing.TB, mode string, mod func(*worker.Config)) (*worker.Worker, *observer.ObservedLogs, error) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	cfg := worker.Config{
		Interface: "test", ID: "test-1", Command: []string{os.Args[0]},
		Env:          map[string]string{"TASKD_TEST_WORKER": mode, "GORACE": "atexit_sleep_ms=0"},
		SetupTimeout: 5 * time.Second, Logger: zap.New(core),
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := worker.Start(context.Background(), cfg)
	if w != nil {
		t.Cleanup(func() {
			w.Kill(errors.New("test over"))
			<-w.Exited()
		})
	}
	return w, logs, err
}

// call sends one call and waits for its reply.
func call(t *testing.T, w *worker.Worker, method string, args ...any) worker.Reply {
	t.Helper()
	if args == nil {
		args = []any{}
	}
	a, err := json.Marshal(args)
	require.NoError(t, err)
	ch := make(chan worker.Reply, 1)
	_, err = w.Call(method, a, func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("no reply to %s", method)
		return worker.Reply{}
	}
}

func TestCallRoundTrip(t *testing.T) {
	w, _, err := start(t, "raw", nil)
	require.NoError(t, err)
	r := call(t, w, "echo", map[string]any{"😀 key": []any{1, "二", nil}}, "𝄞")
	require.NoError(t, r.Err)
	require.True(t, r.OK)
	assert.JSONEq(t, `[{"😀 key":[1,"二",null]},"𝄞"]`, string(r.Result))

	r = call(t, w, "fail")
	require.False(t, r.OK)
	var e wire.ErrorPayload
	require.NoError(t, json.Unmarshal(r.Error, &e))
	assert.Equal(t, "TestError", e.Type)
	assert.Contains(t, e.Trace, "raw.go")
	assert.True(t, w.Alive())
}

func TestPipelinedCallsAreMatchedByID(t *testing.T) {
	w, _, err := start(t, "raw", nil)
	require.NoError(t, err)
	const n = 50
	ch := make(chan string, n)
	for i := range n {
		a, _ := json.Marshal([]any{i})
		_, err := w.Call("echo", a, func(r worker.Reply) { ch <- string(r.Result) })
		require.NoError(t, err)
	}
	for i := range n {
		assert.JSONEq(t, `[`+itoa(i)+`]`, <-ch)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestCleanEnvironment(t *testing.T) {
	t.Setenv("TASKD_SECRET_OF_THE_DAEMON", "leak")
	w, _, err := start(t, "raw", func(c *worker.Config) { c.Env["MY_VAR"] = "x" })
	require.NoError(t, err)
	var env []string
	require.NoError(t, json.Unmarshal(call(t, w, "env").Result, &env))
	joined := strings.Join(env, "\n")
	assert.Contains(t, joined, "MY_VAR=x")
	assert.Contains(t, joined, "TASKD_INTERFACE=test")
	assert.Contains(t, joined, "TASKD_WORKER_ID=test-1")
	assert.Contains(t, joined, "TASKD_PROTOCOL=1")
	assert.NotContains(t, joined, "TASKD_SECRET_OF_THE_DAEMON")
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		allowed := k == "MY_VAR" || k == "GORACE" || strings.HasPrefix(k, "TASKD_")
		for _, p := range worker.PassEnv {
			allowed = allowed || k == p
		}
		assert.True(t, allowed, "unexpected variable %s", k)
	}
}

func TestExitIsClassified(t *testing.T) {
	w, _, err := start(t, "raw", nil)
	require.NoError(t, err)
	r := call(t, w, "crash")
	var ee *worker.ExitError
	require.ErrorAs(t, r.Err, &ee)
	assert.Contains(t, ee.Reason, "exited with status 3")
	assert.Contains(t, ee.Error(), "about to crash on purpose")
	assert.Nil(t, ee.Cause)
	<-w.Exited()
	assert.False(t, w.Alive())
	_, err = w.Call("echo", nil, func(worker.Reply) { t.Error("callback after exit") })
	assert.ErrorIs(t, err, worker.ErrExited)
}

func TestCallTimeoutKillsWorker(t *testing.T) {
	w, _, err := start(t, "raw", func(c *worker.Config) { c.CallTimeout = 150 * time.Millisecond })
	require.NoError(t, err)
	assert.True(t, call(t, w, "sleep", 1).OK)
	begin := time.Now()
	r := call(t, w, "spin")
	require.ErrorIs(t, r.Err, worker.ErrCallTimeout)
	assert.Contains(t, r.Err.Error(), "killed by signal SIGKILL")
	assert.Contains(t, r.Err.Error(), `call "spin" ran longer than 150ms`)
	assert.Less(t, time.Since(begin), 5*time.Second)
}

// TestCallTimeoutCountsFromEachCall: call_timeout bounds each call from when it starts
// running, however long the worker has been busy or idle before.
func TestCallTimeoutCountsFromEachCall(t *testing.T) {
	const timeout = 300 * time.Millisecond
	w, _, err := start(t, "raw", func(c *worker.Config) { c.CallTimeout = timeout })
	require.NoError(t, err)
	begin := time.Now()
	for time.Since(begin) < 2*timeout { // back-to-back calls that add up to more than the timeout
		require.True(t, call(t, w, "sleep", 20).OK)
	}
	time.Sleep(timeout * 2 / 3)
	require.True(t, call(t, w, "sleep", 200).OK, "a call shorter than call_timeout, after an idle spell")
	time.Sleep(timeout / 2)
	require.True(t, call(t, w, "sleep", 200).OK, "and again")
	r := call(t, w, "spin")
	require.ErrorIs(t, r.Err, worker.ErrCallTimeout, "a call longer than call_timeout is still killed")
}

func TestProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		method  string
		args    []any
		want    string
		snippet string
	}{
		{"badid", nil, "not an outstanding call", `\"id\":1001`},
		{"longline", []any{5000}, "longer than 1024 bytes", `{\"t\":\"ok\"`},
	} {
		t.Run(tc.method, func(t *testing.T) {
			w, _, err := start(t, "raw", func(c *worker.Config) { c.MaxMessageBytes = 1024 })
			require.NoError(t, err)
			r := call(t, w, tc.method, tc.args...)
			require.ErrorIs(t, r.Err, wire.ErrProtocol)
			assert.Contains(t, r.Err.Error(), tc.want)
			assert.Contains(t, r.Err.Error(), tc.snippet, "the error quotes a snippet of the line")
		})
	}
}

func TestStrayStdoutIsLoggedAndIgnored(t *testing.T) {
	w, logs, err := start(t, "raw", nil)
	require.NoError(t, err)
	r := call(t, w, "garbage")
	require.True(t, r.OK)
	assert.JSONEq(t, `"after garbage"`, string(r.Result))
	stray := logs.FilterMessageSnippet("stray stdout line").All()
	require.Len(t, stray, 2)
	assert.Equal(t, "test-1", stray[0].ContextMap()["worker"])
}

func TestLongStderrLinesAreSplitNotLost(t *testing.T) {
	w, logs, err := start(t, "raw", nil)
	require.NoError(t, err)
	require.True(t, call(t, w, "stderr", 10000).OK)
	require.Eventually(t, func() bool {
		total := 0
		for _, e := range logs.FilterField(zap.String("stream", "stderr")).All() {
			total += strings.Count(e.Message, "e")
			assert.LessOrEqual(t, len(e.Message), 4096)
		}
		return total == 10000
	}, 5*time.Second, 5*time.Millisecond)
	entries := logs.FilterField(zap.String("stream", "stderr")).All()
	assert.GreaterOrEqual(t, len(entries), 3)
	assert.Equal(t, "test", entries[0].ContextMap()["interface"])
	assert.EqualValues(t, w.PID(), entries[0].ContextMap()["pid"])
}

func TestStartFailures(t *testing.T) {
	t.Run("exits before ready", func(t *testing.T) {
		_, _, err := start(t, "exitnow", nil)
		var se *worker.StartError
		require.ErrorAs(t, err, &se)
		assert.Contains(t, err.Error(), "exited with status 1 before it was ready")
		assert.Contains(t, err.Error(), "cannot open database")
	})
	t.Run("misses setup_timeout", func(t *testing.T) {
		// Long enough for the worker (this test binary, built with -race) to start and write
		// its stderr line on a loaded machine: 200ms was not.
		_, _, err := start(t, "neverready", func(c *worker.Config) { c.SetupTimeout = time.Second })
		require.ErrorIs(t, err, worker.ErrSetupTimeout)
		assert.Contains(t, err.Error(), "setting up forever")
	})
	t.Run("no such executable", func(t *testing.T) {
		_, _, err := start(t, "raw", func(c *worker.Config) { c.Command = []string{"/nonexistent/worker"} })
		require.Error(t, err)
		assert.Contains(t, err.Error(), "/nonexistent/worker")
	})
}

func TestStopIsGracefulAndKillIsIdempotent(t *testing.T) {
	w, _, err := start(t, "raw", nil)
	require.NoError(t, err)
	w.Stop(worker.ErrStopped, time.Second)
	<-w.Exited()
	assert.Contains(t, w.Err().Error(), "exited cleanly")
	w.Kill(errors.New("again"))
	w.Stop(worker.ErrStopped, time.Second)
}

func TestAliveSeesExternalKillBeforeReaping(t *testing.T) {
	w, _, err := start(t, "raw", nil)
	require.NoError(t, err)
	require.True(t, w.Alive())
	require.NoError(t, syscall.Kill(w.PID(), syscall.SIGKILL))
	require.Eventually(t, func() bool { return !w.Alive() }, 5*time.Second, time.Millisecond)
}

func TestByeAndCancel(t *testing.T) {
	w, _, err := start(t, "raw", nil)
	require.NoError(t, err)
	assert.False(t, w.ByeRequested())
	require.True(t, call(t, w, "bye").OK)
	assert.True(t, w.ByeRequested())

	ch := make(chan worker.Reply, 1)
	id, err := w.Call("wait", []byte("[]"), func(r worker.Reply) { ch <- r.Clone() })
	require.NoError(t, err)
	assert.Equal(t, "wait", w.Info().Method)
	w.Cancel(id)
	r := <-ch
	assert.JSONEq(t, `"cancelled"`, string(r.Result))
}

func TestReplyCloneOwnsItsPayloads(t *testing.T) {
	r := worker.Reply{Result: []byte(`[1]`), Error: []byte(`{"msg":"x"}`), Logs: []byte(`[]`)}
	c := r.Clone()
	r.Result[1], r.Error[2], r.Logs[0] = '2', 'M', '{'
	assert.Equal(t, `[1]`, string(c.Result))
	assert.Equal(t, `{"msg":"x"}`, string(c.Error))
	assert.Equal(t, `[]`, string(c.Logs))
}

// signal is a Replier that costs no allocation.
type signal chan bool

func (s signal) OnReply(r worker.Reply) { s <- r.OK }

// TestRelayedCallAllocatesNothing: a call and its reply cost taskd's worker side no
// allocation in the steady state (encoding, the stdin write, the reader, the decoder, the
// call record and the call_timeout timer).
func TestRelayedCallAllocatesNothing(t *testing.T) {
	w, _, err := start(t, "raw", func(c *worker.Config) { c.CallTimeout = time.Minute })
	require.NoError(t, err)
	done := make(signal, 1)
	args := json.RawMessage(`["01234567890123456789012345678901234567890123456789"]`)
	allocs := testing.AllocsPerRun(500, func() {
		if _, err := w.CallEp("echo", args, 0, done); err != nil {
			t.Fatal(err)
		}
		if !<-done {
			t.Fatal("call failed")
		}
	})
	assert.Zero(t, allocs, "allocations per call")
}

// TestCallsAfterKillOrStopFail: once Kill or Stop has been called, a call fails at once
// with the first cause given, before the process has exited, and after.
func TestCallsAfterKillOrStopFail(t *testing.T) {
	first := errors.New("first cause")
	for name, end := range map[string]func(*worker.Worker){
		"kill": func(w *worker.Worker) { w.Kill(first); w.Stop(errors.New("second"), time.Second) },
		"stop": func(w *worker.Worker) { w.Stop(first, time.Second); w.Kill(errors.New("second")) },
	} {
		t.Run(name, func(t *testing.T) {
			w, _, err := start(t, "raw", nil)
			require.NoError(t, err)
			end(w)
			_, err = w.Call("echo", []byte("[]"), func(worker.Reply) { t.Error("callback of a refused call") })
			require.ErrorIs(t, err, first)
			<-w.Exited()
			_, err = w.Call("echo", []byte("[]"), func(worker.Reply) { t.Error("callback of a refused call") })
			require.ErrorIs(t, err, worker.ErrExited)
			require.ErrorIs(t, w.Err(), first)
			assert.False(t, w.Alive())
		})
	}
}

// TestExternalKillIsNotTakenForTaskds: a worker SIGKILLed from outside while taskd writes
// calls to it is reported as killed from outside, never as killed by taskd, however the
// kill races the writes to its stdin (EPIPE) and the reaping. Repeated to meet the race.
func TestExternalKillIsNotTakenForTaskds(t *testing.T) {
	args, _ := json.Marshal([]string{strings.Repeat("x", 64<<10)})
	for i := range 30 {
		w, _, err := start(t, "raw", nil)
		require.NoError(t, err)
		errs := make(chan error, 1000)
		slots := make(chan struct{}, 8) // calls outstanding at once
		writer := make(chan struct{})
		go func() {
			defer close(writer)
			for n := 0; ; n++ {
				select {
				case slots <- struct{}{}:
				case <-w.Exited():
					return
				}
				if n == 20 {
					_ = syscall.Kill(w.PID(), syscall.SIGKILL)
				}
				_, err := w.Call("echo", args, func(r worker.Reply) {
					if r.Err != nil {
						errs <- r.Err
					}
					<-slots
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
		<-w.Exited()
		<-writer
		var ee *worker.ExitError
		require.ErrorAs(t, w.Err(), &ee)
		assert.Nil(t, ee.Cause, "round %d", i)
		assert.Equal(t, "killed by signal SIGKILL from outside taskd", ee.Reason, "round %d", i)
		assert.False(t, w.Alive())
		for len(errs) > 0 {
			err := <-errs
			assert.NotContains(t, err.Error(), "taskd:", "round %d", i)
			assert.NotContains(t, err.Error(), "being stopped", "round %d", i)
		}
	}
}
