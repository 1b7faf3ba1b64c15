package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

func echo(_ context.Context, c *Call) (any, error) { return c.RawArgs(), nil }

func TestMethodAndFunctionStyleCalls(t *testing.T) {
	h := start(t, Spec{
		Methods: map[string]Func{
			"add": func(_ context.Context, c *Call) (any, error) {
				var a, b int
				if err := c.Args(&a, &b); err != nil {
					return nil, err
				}
				return a + b, nil
			},
			"nothing": func(context.Context, *Call) (any, error) { return nil, nil },
		},
		Default: echo,
	})
	h.send(`{"t":"call","id":1,"m":"add","a":[1,2]}`)
	assert.JSONEq(t, `3`, string(h.recvOK(1)))
	h.send(`{"t":"call","id":2,"a":["x",{"y":[1]}]}`)
	assert.JSONEq(t, `["x",{"y":[1]}]`, string(h.recvOK(2)))
	h.send(`{"t":"call","id":3,"m":"","a":[true]}`)
	assert.JSONEq(t, `[true]`, string(h.recvOK(3)))
	h.send(`{"t":"call","id":4}`) // no "a": an empty argument list
	assert.JSONEq(t, `[]`, string(h.recvOK(4)))
	h.send(`{"t":"call","id":5,"m":"nothing"}`)
	assert.Equal(t, `null`, string(h.recvOK(5)))
	require.NoError(t, h.wait())
}

func TestUnknownMethod(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{"b": echo, "a": echo}})
	h.send(`{"t":"call","id":1,"m":"nope"}`)
	e := h.recvErr(1)
	assert.Equal(t, "UnknownMethod", e.Type)
	assert.Equal(t, `unknown method "nope"; this worker has: "a", "b"`, e.Msg)

	h.send(`{"t":"call","id":2,"a":[1]}`)
	e = h.recvErr(2)
	assert.Equal(t, "UnknownMethod", e.Type)
	assert.Contains(t, e.Msg, "no function-style calls")

	h.send(`{"t":"call","id":3,"m":"a","a":[1]}`)
	assert.JSONEq(t, `[1]`, string(h.recvOK(3)), "the worker stays usable")
}

type typedErr struct{}

func (typedErr) Error() string     { return "typed" }
func (typedErr) ErrorType() string { return "KeyError" }

type plainErr struct{ code int }

func (e *plainErr) Error() string { return fmt.Sprint("code ", e.code) }

// stackErr formats with a "stack" under %+v, like errors from github.com/pkg/errors.
type stackErr struct{}

func (stackErr) Error() string { return "with stack" }
func (e stackErr) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('+') {
		io.WriteString(f, "with stack\nmain.f()\n\tf.go:1")
		return
	}
	io.WriteString(f, e.Error())
}

func TestErrorPayload(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want wire.ErrorPayload
	}{
		{"Error", &Error{Type: "ValueError", Msg: "bad", Trace: "here"}, wire.ErrorPayload{Msg: "bad", Type: "ValueError", Trace: "here"}},
		{"Errorf", Errorf("ValueError", "bad %d", 7), wire.ErrorPayload{Msg: "bad 7", Type: "ValueError"}},
		{"wrapped Error", fmt.Errorf("hashing: %w", Errorf("ValueError", "bad")), wire.ErrorPayload{Msg: "hashing: bad", Type: "ValueError"}},
		{"Error without type", &Error{Msg: "m"}, wire.ErrorPayload{Msg: "m", Type: "worker.Error"}},
		{"ErrorType method", fmt.Errorf("x: %w", typedErr{}), wire.ErrorPayload{Msg: "x: typed", Type: "KeyError"}},
		{"errors.New", errors.New("plain"), wire.ErrorPayload{Msg: "plain", Type: "errors.errorString"}},
		{"Go type name", &plainErr{3}, wire.ErrorPayload{Msg: "code 3", Type: "worker.plainErr"}},
		{"through fmt.Errorf", fmt.Errorf("ctx: %w", &plainErr{4}), wire.ErrorPayload{Msg: "ctx: code 4", Type: "worker.plainErr"}},
		{"canceled", fmt.Errorf("query: %w", context.Canceled), wire.ErrorPayload{Msg: "query: context canceled", Type: "context.Canceled"}},
		{"deadline", context.DeadlineExceeded, wire.ErrorPayload{Msg: "context deadline exceeded", Type: "context.DeadlineExceeded"}},
		{"%+v trace", stackErr{}, wire.ErrorPayload{Msg: "with stack", Type: "worker.stackErr", Trace: "with stack\nmain.f()\n\tf.go:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, errorPayload(tt.err))
		})
	}
}

func TestErrorReply(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{
		"fail": func(context.Context, *Call) (any, error) {
			return nil, &Error{Type: "EchoError", Msg: "you asked <for> it", Trace: "line 1\nline 2"}
		},
		"chan": func(context.Context, *Call) (any, error) { return make(chan int), nil },
	}})
	h.send(`{"t":"call","id":1,"m":"fail"}`)
	assert.Equal(t, wire.ErrorPayload{Type: "EchoError", Msg: "you asked <for> it", Trace: "line 1\nline 2"}, h.recvErr(1))

	h.send(`{"t":"call","id":2,"m":"chan"}`)
	e := h.recvErr(2)
	assert.Equal(t, "json.UnsupportedTypeError", e.Type)
	assert.Contains(t, e.Msg, `method "chan" returned a result that cannot be encoded as JSON`)
}

func TestPanic(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{
		"boom":   func(context.Context, *Call) (any, error) { panic("kaboom") },
		"boomE":  func(context.Context, *Call) (any, error) { panic(errors.New("an error value")) },
		"goexit": func(context.Context, *Call) (any, error) { runtime.Goexit(); return nil, nil },
		"ok":     func(context.Context, *Call) (any, error) { return "fine", nil },
	}})
	h.send(`{"t":"call","id":1,"m":"boom"}`)
	e := h.recvErr(1)
	assert.Equal(t, "panic", e.Type)
	assert.Equal(t, "kaboom", e.Msg)
	assert.Contains(t, e.Trace, "goroutine ")
	assert.Contains(t, e.Trace, "TestPanic", "the trace is the handler's stack")

	h.send(`{"t":"call","id":2,"m":"ok"}`)
	assert.JSONEq(t, `"fine"`, string(h.recvOK(2)))

	h.send(`{"t":"call","id":3,"m":"boomE"}`, `{"t":"call","id":4,"m":"goexit"}`, `{"t":"call","id":5,"m":"ok"}`)
	e = h.recvErr(3)
	assert.Equal(t, "panic", e.Type)
	assert.Equal(t, "an error value", e.Msg)
	assert.Equal(t, "panic", h.recvErr(4).Type)
	assert.JSONEq(t, `"fine"`, string(h.recvOK(5)))
}

func TestArgsRoundTrip(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{
		"typed": func(_ context.Context, c *Call) (any, error) {
			var n int64
			var s string
			var obj struct {
				A []map[string]any `json:"a"`
			}
			if err := c.Args(&n, &s, &obj); err != nil {
				return nil, err
			}
			return []any{n, s, obj}, nil
		},
		"any": func(_ context.Context, c *Call) (any, error) {
			var v any
			if err := c.Args(&v); err != nil {
				return nil, err
			}
			return v, nil
		},
		"echo": echo,
	}})
	const args = `[9007199254740993,"😀𝄞 \ud83d\ude00 é",{"a":[{"deep":[1.5,-9007199254740993,null]}]}]`
	want := `[9007199254740993,"😀𝄞 😀 é",{"a":[{"deep":[1.5,-9007199254740993,null]}]}]`
	h.send(`{"t":"call","id":1,"m":"typed","a":` + args + `}`)
	assert.Equal(t, want, string(h.recvOK(1)), "exact numbers and unicode")

	h.send(`{"t":"call","id":2,"m":"any","a":[{"n":9007199254740993,"s":"𝄞"}]}`)
	assert.Equal(t, `{"n":9007199254740993,"s":"𝄞"}`, string(h.recvOK(2)))

	h.send(`{"t":"call","id":3,"m":"echo","a":` + args + `}`)
	assert.Equal(t, args, string(h.recvOK(3)), "RawArgs is the array as sent")

	h.send(`{"t":"call","id":4,"m":"typed","a":[1]}`)
	e := h.recvErr(4)
	assert.Equal(t, "ArgumentError", e.Type)
	assert.Equal(t, `method "typed" takes 3 arguments, got 1`, e.Msg)
}

func TestCallArgs(t *testing.T) {
	c := &Call{Method: "m", args: json.RawMessage(`[9007199254740993, "x", [1,2], null]`)}
	assert.Equal(t, 4, c.NumArgs())

	var n int64
	var s string
	var list []int
	var v any
	require.NoError(t, c.Args(&n, &s, &list, &v))
	assert.Equal(t, int64(9007199254740993), n)
	assert.Equal(t, "x", s)
	assert.Equal(t, []int{1, 2}, list)
	assert.Nil(t, v)

	require.NoError(t, c.Args(nil, &s, nil, nil), "nil skips an argument")
	require.NoError(t, c.Arg(0, &v))
	assert.Equal(t, json.Number("9007199254740993"), v)

	var we *Error
	err := c.Args(&n)
	require.ErrorAs(t, err, &we)
	assert.Equal(t, "ArgumentError", we.Type)
	assert.Equal(t, `method "m" takes 1 argument, got 4`, we.Msg)

	err = c.Args(&s, &s, &s, &s)
	require.ErrorAs(t, err, &we)
	assert.Contains(t, we.Msg, `method "m": argument 1: json: cannot unmarshal number`)

	err = c.Arg(4, &v)
	require.ErrorAs(t, err, &we)
	assert.Equal(t, `method "m" got 4 arguments, has no argument 5`, we.Msg)

	empty := &Call{args: json.RawMessage(`[]`)}
	assert.Equal(t, 0, empty.NumArgs())
	require.NoError(t, empty.Args())
	require.ErrorAs(t, empty.Args(&s), &we)
	assert.Equal(t, `function-style call takes 1 argument, got 0`, we.Msg)
}

func TestLogsTravelWithReply(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{
		"log": func(_ context.Context, c *Call) (any, error) {
			c.Log.Info("one", zap.Int("n", 1))
			c.Log.Debug("hidden: below the default level")
			c.Log.With(zap.String("k", "v")).Warn("two")
			c.Log.Named("sub").Error("three", zap.String("s", "𝄞"))
			return true, nil
		},
		"fail": func(_ context.Context, c *Call) (any, error) {
			c.Log.Info("before")
			stop := c.Timer("step", zap.Int("rows", 3))
			c.Log.Info("inside")
			stop()
			stop() // a second stop records nothing
			return nil, errors.New("failed")
		},
		"quiet": func(context.Context, *Call) (any, error) { return 1, nil },
	}})
	before := float64(time.Now().UnixNano()) / 1e9
	h.send(`{"t":"call","id":1,"m":"log"}`)
	m := h.recv()
	after := float64(time.Now().UnixNano()) / 1e9
	require.Equal(t, wire.TOK, m.T)
	var recs []wire.LogRecord
	require.NoError(t, json.Unmarshal(m.Logs, &recs))
	require.Len(t, recs, 3)
	for i, want := range []struct{ lvl, msg, f string }{
		{"info", "one", `{"n":1}`},
		{"warn", "two", `{"k":"v"}`},
		{"error", "three", `{"logger":"sub","s":"𝄞"}`},
	} {
		assert.Equal(t, want.lvl, recs[i].Lvl)
		assert.Equal(t, want.msg, recs[i].Msg)
		assert.JSONEq(t, want.f, string(recs[i].F))
		assert.True(t, recs[i].TS >= before && recs[i].TS <= after, "ts %f in [%f, %f]", recs[i].TS, before, after)
	}
	for _, want := range []string{"one", "two", "three", `{"n": 1}`} {
		assert.Contains(t, h.stderr.String(), want, "records go to stderr too")
	}
	assert.NotContains(t, h.stderr.String(), "hidden")

	h.send(`{"t":"call","id":2,"m":"fail"}`)
	m = h.recv()
	require.Equal(t, wire.TErr, m.T)
	require.NoError(t, json.Unmarshal(m.Logs, &recs))
	require.Len(t, recs, 3, "logs ride on err replies too")
	assert.Equal(t, []string{"before", "inside", "step"}, []string{recs[0].Msg, recs[1].Msg, recs[2].Msg},
		"a timer's record is made when it stops")
	assert.Equal(t, "info", recs[2].Lvl)
	var f map[string]any
	require.NoError(t, json.Unmarshal(recs[2].F, &f))
	assert.Equal(t, "step", f["timer"])
	assert.EqualValues(t, 3, f["rows"])
	assert.IsType(t, float64(0), f["ms"])
	assert.GreaterOrEqual(t, f["ms"], 0.0)
	assert.Len(t, f, 3, "fields: %v", f)
	assert.LessOrEqual(t, recs[1].TS, recs[2].TS)

	h.send(`{"t":"call","id":3,"m":"quiet"}`)
	assert.Equal(t, `{"t":"ok","id":3,"r":1}`, string(h.recvLine()), "no logs, no logs field")
}

func TestCancelRunningCall(t *testing.T) {
	started := make(chan struct{})
	h := start(t, Spec{Methods: map[string]Func{
		"wait": func(ctx context.Context, _ *Call) (any, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		},
		"ok": func(context.Context, *Call) (any, error) { return true, nil },
	}})
	h.send(`{"t":"call","id":1,"m":"wait"}`)
	<-started
	h.send(`{"t":"cancel","id":99}`, `{"t":"cancel","id":1}`)
	assert.Equal(t, "context.Canceled", h.recvErr(1).Type)
	h.send(`{"t":"cancel","id":1}`, `{"t":"call","id":2,"m":"ok"}`)
	assert.JSONEq(t, `true`, string(h.recvOK(2)), "a late cancel is ignored")
}

func TestCancelQueuedCall(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{
		"wait": func(ctx context.Context, _ *Call) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		// done reports whether the call's context was already done when it started.
		"done": func(ctx context.Context, _ *Call) (any, error) { return ctx.Err() != nil, nil },
	}})
	// Call 2 cannot start before call 1 ends, which needs cancel 1, which the reader sees
	// after cancel 2: so call 2 is cancelled while queued. It still runs (a reply is owed),
	// with its context already cancelled, as in the Python and Perl SDKs.
	h.send(`{"t":"call","id":1,"m":"wait"}`, `{"t":"call","id":2,"m":"done"}`,
		`{"t":"call","id":3,"m":"done","a":[]}`, `{"t":"cancel","id":2}`, `{"t":"cancel","id":1}`)
	assert.Equal(t, "context.Canceled", h.recvErr(1).Type)
	assert.JSONEq(t, `true`, string(h.recvOK(2)), "call 2 saw its cancel")
	assert.JSONEq(t, `false`, string(h.recvOK(3)), "call 3 was not cancelled")
	require.NoError(t, h.wait())
}

func TestCheckoutDone(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	var dones atomic.Int32
	h := start(t, Spec{
		Methods: map[string]Func{"m": func(_ context.Context, c *Call) (any, error) {
			var s string
			err := c.Args(&s)
			record(s)
			return s, err
		}},
		CheckoutDone: func(context.Context) error {
			record("done")
			if dones.Add(1) == 2 {
				return errors.New("rollback failed")
			}
			return nil
		},
	})
	h.send(`{"t":"call","id":1,"m":"m","a":["a"]}`, `{"t":"done"}`, `{"t":"call","id":2,"m":"m","a":["b"]}`)
	h.recvOK(1)
	h.recvOK(2)
	h.send(`{"t":"done"}`, `{"t":"call","id":3,"m":"m","a":["c"]}`)
	err := <-h.done // serve closes its input itself: stdin is still open here
	h.done <- err
	require.Error(t, err, "a failed CheckoutDone ends the worker")
	assert.Contains(t, err.Error(), "CheckoutDone failed")
	assert.Contains(t, err.Error(), "rollback failed")
	assert.Equal(t, []string{"a", "done", "b", "done"}, events)
}

func TestCheckoutDonePanic(t *testing.T) {
	h := start(t, Spec{Default: echo, CheckoutDone: func(context.Context) error { panic("oops") }})
	h.send(`{"t":"done"}`)
	err := h.wait()
	var we *Error
	require.ErrorAs(t, err, &we)
	assert.Equal(t, "panic", we.Type)
	assert.Contains(t, h.stderr.String(), "TestCheckoutDonePanic", "the stack goes to stderr")
}

func TestBye(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{
		"tired": func(_ context.Context, c *Call) (any, error) {
			c.Bye("too much memory")
			return true, nil
		},
		"quiet": func(_ context.Context, c *Call) (any, error) {
			c.Bye("")
			return nil, errors.New("and failed")
		},
	}})
	h.send(`{"t":"call","id":1,"m":"tired"}`)
	assert.Equal(t, `{"t":"bye","msg":"too much memory"}`, string(h.recvLine()))
	h.recvOK(1)
	h.send(`{"t":"call","id":2,"m":"quiet"}`)
	assert.Equal(t, `{"t":"bye"}`, string(h.recvLine()))
	h.recvErr(2)
}

func TestIgnoresUnknownAndMalformed(t *testing.T) {
	h := start(t, Spec{Default: echo})
	h.send(
		`{"t":"future-thing","id":5}`,
		`not json at all`,
		`{"t":"call"}`, // no id: a protocol error, logged and ignored
		`{"t":"call","id":1,"a":[1],"x-new-field":{"a":1}}`,
		`{"t":"call","id":2,"a":[2]}`,
	)
	assert.JSONEq(t, `[1]`, string(h.recvOK(1)))
	assert.JSONEq(t, `[2]`, string(h.recvOK(2)))
	require.NoError(t, h.wait())
	assert.Contains(t, h.stderr.String(), "ignoring a malformed line")
}

func TestPipelinedCallsAnsweredInOrder(t *testing.T) {
	h := start(t, Spec{Default: echo})
	var lines []string
	for i := 1; i <= 100; i++ {
		lines = append(lines, fmt.Sprintf(`{"t":"call","id":%d,"a":[%d]}`, i, i))
	}
	h.send(lines...)
	for i := 1; i <= 100; i++ {
		assert.Equal(t, fmt.Sprintf("[%d]", i), string(h.recvOK(uint64(i))))
	}
}

func TestEOF(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		h := start(t, Spec{Default: echo})
		require.NoError(t, h.wait())
	})
	t.Run("cancels calls and answers those already read", func(t *testing.T) {
		started := make(chan struct{})
		var dones atomic.Int32
		h := start(t, Spec{
			Methods: map[string]Func{
				"wait": func(ctx context.Context, _ *Call) (any, error) {
					close(started)
					<-ctx.Done()
					return "cancelled", nil
				},
				"check": func(ctx context.Context, _ *Call) (any, error) { return ctx.Err() != nil, nil },
			},
			CheckoutDone: func(ctx context.Context) error { dones.Add(1); return nil },
		})
		h.send(`{"t":"call","id":1,"m":"wait"}`, `{"t":"call","id":2,"m":"check"}`, `{"t":"done"}`)
		<-started
		h.in.Close()
		assert.Equal(t, `"cancelled"`, string(h.recvOK(1)))
		assert.Equal(t, `true`, string(h.recvOK(2)), "a call read before EOF runs with a cancelled context")
		require.NoError(t, h.wait())
		assert.Equal(t, int32(1), dones.Load())
	})
	t.Run("does not wait for a call that ignores ctx", func(t *testing.T) {
		started, release, returned := make(chan struct{}), make(chan struct{}), make(chan struct{})
		h := start(t, Spec{Default: func(ctx context.Context, _ *Call) (any, error) {
			defer close(returned)
			close(started)
			<-release
			return nil, nil
		}})
		h.send(`{"t":"call","id":1}`, `{"t":"call","id":2}`)
		<-started
		require.NoError(t, h.wait())
		close(release)
		<-returned
	})
}

func TestLimits(t *testing.T) {
	t.Run("line too long", func(t *testing.T) {
		h := startRaw(t, Spec{Default: echo}, 64)
		h.recvLine() // ready
		h.send(`{"t":"call","id":1,"a":["` + strings.Repeat("x", 100) + `"]}`)
		err := h.wait()
		require.ErrorIs(t, err, wire.ErrLineTooLong)
		assert.Contains(t, err.Error(), "TASKD_MAX_MESSAGE_BYTES")
	})
	t.Run("reply too large", func(t *testing.T) {
		h := startRaw(t, Spec{Default: func(context.Context, *Call) (any, error) { return strings.Repeat("x", 100), nil }}, 64)
		h.recvLine() // ready
		h.send(`{"t":"call","id":1}`)
		e := h.recvErr(1)
		assert.Equal(t, "ReplyTooLarge", e.Type)
	})
}

func TestSetup(t *testing.T) {
	t.Run("runs once before ready", func(t *testing.T) {
		var n atomic.Int32
		h := start(t, Spec{
			Setup:   func(context.Context) error { n.Add(1); return nil },
			Default: func(context.Context, *Call) (any, error) { return n.Load(), nil },
		})
		h.send(`{"t":"call","id":1}`, `{"t":"call","id":2}`)
		assert.Equal(t, `1`, string(h.recvOK(1)))
		assert.Equal(t, `1`, string(h.recvOK(2)))
	})
	for name, setup := range map[string]func(context.Context) error{
		"error": func(context.Context) error { return errors.New("no database") },
		"panic": func(context.Context) error { panic("no database") },
	} {
		t.Run(name, func(t *testing.T) {
			h := startRaw(t, Spec{Setup: setup, Default: echo}, 0)
			_, ok := <-h.lines
			assert.False(t, ok, "no ready line")
			err := h.wait()
			require.Error(t, err)
			assert.Contains(t, err.Error(), "setup failed: no database")
		})
	}
}

// brokenWriter accepts the ready line, then fails every Write, like a pipe whose reader
// (taskd) went away.
type brokenWriter struct {
	n      int
	failed chan struct{}
}

func (w *brokenWriter) Write(p []byte) (int, error) {
	if w.n++; w.n == 1 {
		return len(p), nil
	}
	if w.n == 2 {
		close(w.failed)
	}
	return 0, errors.New("broken pipe")
}

func TestWriteErrorEndsServe(t *testing.T) {
	inR, inW := io.Pipe()
	out := &brokenWriter{failed: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- serve(context.Background(), Spec{Default: echo}, inR, out, io.Discard, 0) }()
	_, err := io.WriteString(inW, `{"t":"call","id":1}`+"\n")
	require.NoError(t, err)
	<-out.failed
	err = <-done // stdin is still open: serve closed its input to stop the reader
	inW.Close()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "writing to taskd: broken pipe")
}

func TestSpecValidation(t *testing.T) {
	for name, spec := range map[string]Spec{
		"empty":        {},
		"empty name":   {Methods: map[string]Func{"": echo}},
		"nil function": {Methods: map[string]Func{"x": nil}},
	} {
		t.Run(name, func(t *testing.T) {
			err := serve(context.Background(), spec, strings.NewReader(""), io.Discard, io.Discard, 0)
			assert.Error(t, err)
		})
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("TASKD_INTERFACE", "passwd")
	t.Setenv("TASKD_WORKER_ID", "passwd-7")
	assert.Equal(t, "passwd", Interface())
	assert.Equal(t, "passwd-7", ID())

	for v, want := range map[string]int{"": wire.DefaultMaxMessageBytes, "1024": 1024, "2MiB": 2 << 20, "64 KiB": 64 << 10, "1GiB": 1 << 30} {
		t.Setenv("TASKD_MAX_MESSAGE_BYTES", v)
		n, err := maxMessageBytes()
		require.NoError(t, err, v)
		assert.Equal(t, want, n, v)
	}
	for _, v := range []string{"-1", "0", "lots", "1.5MiB", "4GiB", "MiB"} {
		t.Setenv("TASKD_MAX_MESSAGE_BYTES", v)
		_, err := maxMessageBytes()
		assert.Error(t, err, v)
	}
}

// BenchmarkEcho measures one call round trip through serve (pipes, no process).
func BenchmarkEcho(b *testing.B) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- serve(context.Background(), Spec{Methods: map[string]Func{"echo": echo}}, inR, outW, io.Discard, 0)
		outW.Close()
	}()
	lr := wire.NewLineReader(outR, 0)
	if _, err := lr.ReadLine(); err != nil { // ready
		b.Fatal(err)
	}
	call := []byte(`{"t":"call","id":1,"m":"echo","a":["hello",{"n":1},[2,3]]}` + "\n")
	ok := []byte(`{"t":"ok","id":1,`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inW.Write(call); err != nil {
			b.Fatal(err)
		}
		line, err := lr.ReadLine()
		if err != nil {
			b.Fatal(err)
		}
		if !bytes.HasPrefix(line, ok) {
			b.Fatalf("reply %s", line)
		}
	}
	inW.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// TestPipelinedCallsBehindAnErrorAreNotRun: with ep on every call (taskd pipelining), a
// call made before the application saw an error is answered "aborted" without running;
// one made after it runs; done starts the count again; a call without ep always runs.
func TestPipelinedCallsBehindAnErrorAreNotRun(t *testing.T) {
	var ran atomic.Int32
	h := start(t, Spec{Methods: map[string]Func{
		"fail": func(context.Context, *Call) (any, error) { return nil, Errorf("E", "no") },
		"echo": func(_ context.Context, c *Call) (any, error) { ran.Add(1); return json.RawMessage(c.RawArgs()), nil },
	}})
	h.send(`{"t":"call","id":1,"m":"fail","ep":0}`, `{"t":"call","id":2,"m":"echo","a":["commit"],"ep":0}`,
		`{"t":"call","id":3,"m":"echo","a":["after"],"ep":1}`)
	h.recvErr(1)
	m := h.recv()
	assert.Equal(t, wire.TAborted, m.T)
	assert.EqualValues(t, 2, m.ID)
	assert.Empty(t, m.Logs)
	assert.JSONEq(t, `["after"]`, string(h.recvOK(3)))
	assert.EqualValues(t, 1, ran.Load(), "the aborted call did not run")
	h.send(`{"t":"call","id":4,"m":"echo","a":["no ep"]}`)
	assert.JSONEq(t, `["no ep"]`, string(h.recvOK(4)), "a call without ep always runs")
	h.send(`{"t":"done"}`, `{"t":"call","id":5,"m":"echo","a":["next checkout"],"ep":0}`)
	assert.JSONEq(t, `["next checkout"]`, string(h.recvOK(5)), "done resets the error count")
	h.send(`{"t":"call","id":6,"m":"nope","ep":0}`, `{"t":"call","id":7,"m":"echo","ep":0}`)
	assert.Equal(t, "UnknownMethod", h.recvErr(6).Type)
	assert.Equal(t, `{"t":"aborted","id":7}`, string(h.recvLine()), "an unknown method's err counts too")
	assert.EqualValues(t, 3, ran.Load())
}

// TestReaderRoleHandOffs mixes quick calls with calls long enough for the supervisor to hand
// the reader role to a watcher, in bursts that arrive while either holds it, with cancels
// for running and queued calls: every call is answered once, in order, and a cancelled
// call sees its cancel.
func TestReaderRoleHandOffs(t *testing.T) {
	h := start(t, Spec{Methods: map[string]Func{
		"nap": func(ctx context.Context, c *Call) (any, error) {
			var ms int
			if err := c.Args(&ms); err != nil {
				return nil, err
			}
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
				return ms, nil
			case <-ctx.Done():
				return "cancelled", nil
			}
		},
	}})
	id := uint64(0)
	for burst := 0; burst < 40; burst++ {
		var lines []string
		first := id + 1
		for i := 0; i < 1+burst%5; i++ {
			id++
			ms := []int{0, 0, 3, 0, 5000}[(burst+i)%5] // 5000: only a cancel ends it
			lines = append(lines, fmt.Sprintf(`{"t":"call","id":%d,"m":"nap","a":[%d]}`, id, ms))
		}
		// The cancels travel in the same write: io.Pipe has no buffer, and the harness
		// reads no reply while it writes.
		for i := first; i <= id; i++ {
			if (burst+int(i-first))%5 == 4 {
				lines = append(lines, fmt.Sprintf(`{"t":"cancel","id":%d}`, i))
			}
		}
		h.send(lines...)
		for i := first; i <= id; i++ {
			r := h.recvOK(i)
			if (burst+int(i-first))%5 == 4 {
				assert.Equal(t, `"cancelled"`, string(r), "call %d", i)
			} else {
				assert.NotEqual(t, `"cancelled"`, string(r), "call %d", i)
			}
		}
	}
}
