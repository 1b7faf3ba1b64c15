package conformance_test

// The scenarios of issue 5, run through a real taskd against every worker implementation
// in impls. Base scenarios run for every implementation; the SDK ones (sdkOnly) use the SDK
// part of the method contract (doc.go).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

const sdkMiB = 1 << 20

// sdkOneWorker keeps exactly one warm worker, so that consecutive checkouts get the same one
// unless it is retired.
const sdkOneWorker = "min_idle: 1\nmax_workers: 1"

func TestArgsAndResultsRoundTrip(t *testing.T) {
	const huge = "123456789012345678901234567890" // 30 digits: beyond int64 and float64
	args := []any{
		map[string]any{"nested": map[string]any{"list": []any{1, []any{2, []any{3, map[string]any{"x": nil}}}}}, "😀 key": "v"},
		"h\u00e9llo w\u00f6rld", "你好", "😀 𝄞 non-BMP", "quote \" backslash \\ newline \n tab \t nul \x00", "",
		int64(math.MaxInt64), int64(math.MinInt64), int64(1<<53 + 1),
		json.RawMessage(huge), json.RawMessage("-" + huge),
		0.1, -2.25, 0.30000000000000004, 3.141592653589793, 1e300, 5e-324,
		nil, []any{}, map[string]any{}, true, false,
	}
	forEach(t, false, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, "min_idle: 1"))
		var got []json.RawMessage
		require.NoError(t, c.Call(ctxT(t), "echo", &got, args...))
		require.Len(t, got, len(args))
		for i, want := range args {
			w, err := json.Marshal(want)
			require.NoError(t, err)
			sdkSameJSON(t, w, got[i])
		}

		var maxInt int64
		require.NoError(t, json.Unmarshal(got[6], &maxInt))
		assert.Equal(t, int64(math.MaxInt64), maxInt, "2^63-1 into an int64")
		assert.Equal(t, huge, string(bytes.TrimSpace(got[9])), "a 30-digit integer, digit for digit")
		assert.Equal(t, "-"+huge, string(bytes.TrimSpace(got[10])))
		var s string
		require.NoError(t, json.Unmarshal(got[3], &s))
		assert.Equal(t, "😀 𝄞 non-BMP", s)

		var typed struct {
			A []any   `json:"a"`
			N int64   `json:"n"`
			F float64 `json:"f"`
			U string  `json:"u"`
			M map[string]int
		}
		var out []json.RawMessage
		in := map[string]any{"a": []any{}, "n": int64(math.MaxInt64), "f": 0.1, "u": "😀", "M": map[string]int{"k": 1}}
		require.NoError(t, c.Call(ctxT(t), "echo", &out, in))
		require.Len(t, out, 1)
		require.NoError(t, json.Unmarshal(out[0], &typed))
		assert.Equal(t, []any{}, typed.A, "an empty array stays an empty array, not null")
		assert.Equal(t, int64(math.MaxInt64), typed.N)
		assert.Equal(t, 0.1, typed.F)
		assert.Equal(t, "😀", typed.U)

		var fn []string
		require.NoError(t, c.Call(ctxT(t), "", &fn, "function-style"), "function-style call")
		assert.Equal(t, []string{"function-style"}, fn)
		var none []any
		require.NoError(t, c.Call(ctxT(t), "echo", &none))
		assert.Equal(t, []any{}, none, "no arguments: an empty array")
	})
}

// sdkSameJSON asserts that two JSON texts hold the same value: integers digit for digit,
// other numbers as the same float64 (1e300 may come back as 1e+300).
func sdkSameJSON(t *testing.T, want, got json.RawMessage) {
	t.Helper()
	dec := func(b []byte) any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var v any
		require.NoError(t, d.Decode(&v), "%s", b)
		return v
	}
	if !sdkEqualJSON(dec(want), dec(got)) {
		t.Errorf("JSON differs:\nwant %s\ngot  %s", want, got)
	}
}

func sdkEqualJSON(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		ai, aok := new(big.Int).SetString(a.String(), 10)
		bi, bok := new(big.Int).SetString(b.String(), 10)
		if aok || bok {
			return aok && bok && ai.Cmp(bi) == 0
		}
		af, err1 := a.Float64()
		bf, err2 := b.Float64()
		return err1 == nil && err2 == nil && af == bf
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sdkEqualJSON(a[i], b[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !sdkEqualJSON(v, w) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

func TestRemoteErrorTypeAndTrace(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, sdkOneWorker))
		ctx := ctxT(t)
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		defer co.Release()
		before := sdkPID(t, co)

		err = co.Call(ctx, "fail", nil, "it broke: 😀")
		var re *client.RemoteError
		require.ErrorAs(t, err, &re)
		assert.Contains(t, re.Message, "it broke: 😀")
		assert.NotEmpty(t, re.Type, "the error's type")
		assert.NotEmpty(t, re.Trace, "the error's trace")
		assert.Equal(t, "fail", re.Method)
		assert.Equal(t, "w", re.Interface)
		assert.Contains(t, err.Error(), re.Type)

		assert.Equal(t, before, sdkPID(t, co), "the worker stays usable after an error")
		co.Release()
		co2, err := c.Checkout(ctx)
		require.NoError(t, err)
		defer co2.Release()
		assert.NotEqual(t, before, sdkPID(t, co2), "a worker whose checkout saw an error is retired on release")
	})
}

func TestSetupOncePerWorker(t *testing.T) {
	forEach(t, true, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, sdkOneWorker))
		first := 0
		for i := range 10 {
			co, err := c.Checkout(ctxT(t))
			require.NoError(t, err)
			p := sdkPID(t, co)
			if i == 0 {
				first = p
			}
			require.Equal(t, first, p, "checkout %d: one worker serves every checkout", i)
			assert.Equal(t, 1, sdkCounts(t, co).Setups, "checkout %d", i)
			co.Release()
		}
	})
}

func TestCheckoutDoneBetweenCheckouts(t *testing.T) {
	forEach(t, true, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, sdkOneWorker))
		first := 0
		for i := range 5 {
			co, err := c.Checkout(ctxT(t))
			require.NoError(t, err)
			// The first call of a checkout already sees the previous checkout's done.
			assert.Equal(t, i, sdkCounts(t, co).Dones, "checkout %d, first call", i)
			p := sdkPID(t, co)
			if i == 0 {
				first = p
			}
			require.Equal(t, first, p, "checkout %d: the worker was kept", i)
			assert.Equal(t, i, sdkCounts(t, co).Dones, "checkout %d: no done between calls of one checkout", i)
			co.Release()
		}
	})
}

func TestLogsAndTimersInOrder(t *testing.T) {
	forEach(t, true, func(t *testing.T, im impl) {
		t.Parallel()
		core, obs := observer.New(zapcore.DebugLevel)
		c := newClient(t, start(t, im, "min_idle: 1"), func(cfg *client.Config) { cfg.Logger = zap.New(core) })
		var r string
		require.NoError(t, c.Call(ctxT(t), "logs", &r))
		assert.Equal(t, "logged", r)

		// Records arrive before Call returns, in the order the worker made them; a
		// timer's record is made when it stops, so it follows "two", logged inside it.
		entries := obs.FilterField(zap.String("method", "logs")).AllUntimed()
		type rec struct {
			lvl zapcore.Level
			msg string
		}
		var got []rec
		for _, e := range entries {
			got = append(got, rec{e.Level, e.Message})
		}
		require.Equal(t, []rec{{zapcore.InfoLevel, "one"}, {zapcore.WarnLevel, "two"}, {zapcore.InfoLevel, "t"}, {zapcore.ErrorLevel, "three"}}, got)

		f := entries[2].ContextMap()
		assert.Equal(t, "t", f["timer"], "timer record fields: %v", f)
		ms, ok := sdkNumber(f["ms"])
		assert.True(t, ok && ms >= 0 && ms < 60_000, "timer ms: %#v", f["ms"])
		assert.Equal(t, "w", f["interface"])

		var last time.Time
		for i, e := range entries {
			ts, ok := e.ContextMap()["worker_ts"].(time.Time)
			require.True(t, ok, "record %d has worker_ts", i)
			assert.False(t, ts.Before(last), "record %d: worker time stamps in order", i)
			last = ts
		}
	})
}

func TestLogRecord(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		t.Parallel()
		core, obs := observer.New(zapcore.DebugLevel)
		c := newClient(t, start(t, im, "min_idle: 1"), func(cfg *client.Config) { cfg.Logger = zap.New(core) })
		var ok bool
		require.NoError(t, c.Call(ctxT(t), "log", &ok, "hello 😀"))
		assert.True(t, ok)
		entries := obs.FilterField(zap.String("method", "log")).AllUntimed()
		require.Len(t, entries, 1)
		assert.Equal(t, "hello 😀", entries[0].Message)
		assert.Equal(t, zapcore.InfoLevel, entries[0].Level)
	})
}

// sdkNumber returns a log field's numeric value: the client logs integral numbers as int64.
func sdkNumber(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case int64:
		return float64(v), true
	}
	return 0, false
}

func TestPrintToStdoutIsHarmless(t *testing.T) {
	// What the handler prints is a valid reply for a call that does not exist: if it
	// reached the protocol, taskd would kill the worker for a protocol error.
	const stray = `{"t":"ok","id":424242,"r":"stray print"}`
	forEach(t, true, func(t *testing.T, im impl) {
		t.Parallel()
		d := start(t, im, sdkOneWorker)
		c := newClient(t, d)
		ctx := ctxT(t)
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		defer co.Release()
		before := sdkPID(t, co)
		var r string
		require.NoError(t, co.Call(ctx, "print", &r, stray))
		assert.Equal(t, "printed", r)
		var echoed []string
		require.NoError(t, co.Call(ctx, "echo", &echoed, "after print"))
		assert.Equal(t, []string{"after print"}, echoed)
		assert.Equal(t, before, sdkPID(t, co), "same worker, still alive")
		require.Eventually(t, func() bool {
			return strings.Contains(d.Logs(), "424242") && strings.Contains(d.Logs(), "print during setup")
		}, 10*time.Second, 10*time.Millisecond, "what the worker printed shows up in taskd's log (as stderr)")
		assert.NotContains(t, d.Logs(), "protocol error")
	})
}

func TestOneMiB(t *testing.T) {
	arg := strings.Repeat("aé😀", sdkMiB/7+1)[:sdkMiB] // 1 MiB of UTF-8, cut at a character boundary
	for !utf8.ValidString(arg) {
		arg = arg[:len(arg)-1]
	}
	forEach(t, false, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, "min_idle: 1"))
		var got []string
		require.NoError(t, c.Call(ctxT(t), "echo", &got, arg))
		require.Len(t, got, 1)
		assert.True(t, got[0] == arg, "1 MiB argument echoed intact")
		if !im.sdk {
			return
		}
		var n int
		require.NoError(t, c.Call(ctxT(t), "len", &n, arg))
		assert.Equal(t, utf8.RuneCountInString(arg), n, "length in characters")
		var s string
		require.NoError(t, c.Call(ctxT(t), "big", &s, sdkMiB))
		assert.True(t, s == strings.Repeat("y", sdkMiB), "1 MiB result: got %d bytes", len(s))
	})
}

func TestCancelIsObserved(t *testing.T) {
	// pkg/client sends "cancel" only with an abort (a caller who gives up fails the
	// checkout), so this test speaks the client protocol itself (docs/client-protocol.md)
	// to cancel a call and go on using the checkout.
	forEach(t, true, func(t *testing.T, im impl) {
		t.Parallel()
		d := start(t, im, sdkOneWorker)
		rc := sdkDialRaw(t, d)
		co, workerPID := rc.checkout(t, "w")
		st := newClient(t, d)

		// Each attempt: call wait_cancel, wait until taskd has sent it to the worker, then
		// cancel it, again on each tick until the reply comes (a cancel is best effort: one
		// that crosses the call's start inside an SDK may be lost). A cancel that reaches
		// an SDK after it read the call but before the handler started may be answered
		// without running the handler (the Go SDK replies with an error saying so): that
		// cancel was observed too, but the point is a running handler seeing it, so try
		// again.
		var reply sdkRawMsg
		id := uint64(0)
		for id < 20 {
			id++
			rc.send(t, map[string]any{"t": "call", "co": co, "id": id, "m": "wait_cancel", "a": []any{60000}})
			require.Eventually(t, func() bool { return sdkRunningMethod(t, st, workerPID) == "wait_cancel" },
				20*time.Second, 2*time.Millisecond)
			require.Eventually(t, func() bool {
				select {
				case reply = <-rc.in:
					return true
				default:
					rc.send(t, map[string]any{"t": "cancel", "co": co, "id": id})
					return false
				}
			}, 20*time.Second, 50*time.Millisecond, "a cancelled wait_cancel must return")
			require.Equal(t, id, reply.ID, "reply: %+v", reply)
			if reply.T != "err" {
				break
			}
			require.NotNil(t, reply.E, "reply: %+v", reply)
			require.Contains(t, reply.E.Msg, "cancel", "an error reply to a cancelled call says why")
			t.Logf("attempt %d: cancelled before the handler started (%s); again", id, reply.E.Msg)
		}
		assert.Equal(t, "ok", reply.T, "reply: %+v", reply)
		assert.JSONEq(t, `"cancelled"`, string(reply.R), "the handler saw the cancel")

		// The worker stays usable on the same checkout.
		rc.send(t, map[string]any{"t": "call", "co": co, "id": id + 1, "m": "echo", "a": []any{"after cancel"}})
		reply = rc.recv(t)
		assert.Equal(t, "ok", reply.T, "reply: %+v", reply)
		assert.JSONEq(t, `["after cancel"]`, string(reply.R))
		rc.send(t, map[string]any{"t": "release", "co": co})
	})
}

func TestByeRetiresWorker(t *testing.T) {
	forEach(t, false, func(t *testing.T, im impl) {
		t.Parallel()
		c := newClient(t, start(t, im, sdkOneWorker))
		ctx := ctxT(t)
		co, err := c.Checkout(ctx)
		require.NoError(t, err)
		first := sdkPID(t, co)
		var r string
		require.NoError(t, co.Call(ctx, "bye", &r))
		assert.Equal(t, "bye", r)
		co.Release()

		// Every SDK (and the raw worker) sends bye with the reply, just before it, so taskd
		// knows it at the release: the next checkout gets another worker, and so does the
		// one after a one-shot call that says bye.
		co, err = c.Checkout(ctx)
		require.NoError(t, err)
		second := sdkPID(t, co)
		assert.NotEqual(t, first, second, "a checkout gets another worker")
		co.Release()
		require.NoError(t, c.Call(ctx, "bye", &r))
		co, err = c.Checkout(ctx)
		require.NoError(t, err)
		assert.NotEqual(t, second, sdkPID(t, co), "after a one-shot call that said bye too")
		co.Release()
		require.Eventually(t, func() bool { return !taskdtest.Alive(first) }, 20*time.Second, 10*time.Millisecond,
			"the worker that said bye exits")
	})
}

func sdkPID(t *testing.T, co *client.Checkout) int {
	t.Helper()
	var p int
	require.NoError(t, co.Call(ctxT(t), "pid", &p))
	require.Equal(t, co.Worker().PID, p, "the checkout's worker answers")
	return p
}

type sdkCountsResult struct {
	Setups int `json:"setups"`
	Dones  int `json:"dones"`
}

func sdkCounts(t *testing.T, co *client.Checkout) sdkCountsResult {
	t.Helper()
	var r sdkCountsResult
	require.NoError(t, co.Call(ctxT(t), "counts", &r))
	return r
}

// sdkRunningMethod returns the method taskd reports as running on worker pid, if any.
func sdkRunningMethod(t *testing.T, c *client.Client, pid int) string {
	st, err := c.DaemonStatus(ctxT(t))
	require.NoError(t, err)
	for _, is := range st.Interfaces {
		for _, w := range is.Workers {
			if w.PID == pid {
				return w.Method
			}
		}
	}
	return ""
}

// sdkRawClient speaks the client protocol (docs/client-protocol.md) on its own connection.
type sdkRawClient struct {
	conn net.Conn
	in   chan sdkRawMsg // every message taskd sends, in order; closed when the connection ends
}

type sdkRawMsg struct {
	T    string          `json:"t"`
	ID   uint64          `json:"id"`
	Co   uint64          `json:"co"`
	PID  int             `json:"pid"`
	R    json.RawMessage `json:"r"`
	Code string          `json:"code"`
	Msg  string          `json:"msg"`
	E    *struct {
		Msg  string `json:"msg"`
		Type string `json:"type"`
	} `json:"e"`
}

// sdkDialRaw connects to d; the connection is closed, and its reader stopped, at cleanup.
func sdkDialRaw(t *testing.T, d *taskdtest.Daemon) *sdkRawClient {
	t.Helper()
	conn, err := net.Dial("unix", d.Socket)
	require.NoError(t, err)
	rc := &sdkRawClient{conn: conn, in: make(chan sdkRawMsg, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(rc.in)
		r := bufio.NewReader(conn)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			var m sdkRawMsg
			if json.Unmarshal(line, &m) != nil {
				m = sdkRawMsg{T: "undecodable", Msg: string(line)}
			}
			rc.in <- m
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		for range rc.in { // drain, so that the reader can finish
		}
		wg.Wait()
	})
	return rc
}

func (rc *sdkRawClient) send(t *testing.T, msg map[string]any) {
	t.Helper()
	b, err := json.Marshal(msg)
	require.NoError(t, err)
	_, err = rc.conn.Write(append(b, '\n'))
	require.NoError(t, err)
}

func (rc *sdkRawClient) recv(t *testing.T) sdkRawMsg {
	t.Helper()
	select {
	case m, ok := <-rc.in:
		require.True(t, ok, "taskd closed the connection")
		return m
	case <-ctxT(t).Done():
		t.Fatal("no message from taskd")
		return sdkRawMsg{}
	}
}

// checkout checks out a worker of iface and returns the checkout id and the worker's pid.
func (rc *sdkRawClient) checkout(t *testing.T, iface string) (co uint64, pid int) {
	t.Helper()
	rc.send(t, map[string]any{"t": "checkout", "id": 1, "iface": iface})
	m := rc.recv(t)
	if m.T != "granted" {
		t.Fatal(errors.New("checkout not granted: " + m.T + " " + m.Code + " " + m.Msg))
	}
	return m.Co, m.PID
}
