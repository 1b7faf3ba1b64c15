package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLineReader(t *testing.T) {
	for name, mk := range map[string]func(string) io.Reader{
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
	} {
		t.Run(name, func(t *testing.T) {
			lr := NewLineReader(mk("short\nnext\r\n"+strings.Repeat("y", 10)+"\nlast-unterminated"), 10)
			for _, want := range []string{"short", "next\r", strings.Repeat("y", 10)} { // exactly max bytes is allowed
				line, err := lr.ReadLine()
				require.NoError(t, err)
				assert.Equal(t, want, string(line))
			}
			_, err := lr.ReadLine()
			require.ErrorIs(t, err, ErrLineTooLong, "unterminated final line over the limit")

			lr = NewLineReader(mk("short\n"+strings.Repeat("x", 100)+"\nnext\n"), 10)
			line, err := lr.ReadLine()
			require.NoError(t, err)
			assert.Equal(t, "short", string(line))
			_, err = lr.ReadLine()
			require.ErrorIs(t, err, ErrLineTooLong)
			assert.Contains(t, err.Error(), `"xxxx`)
			assert.Contains(t, err.Error(), "longer than 10 bytes")
			_, err = lr.ReadLine()
			require.ErrorIs(t, err, ErrLineTooLong, "the reader stops at a line too long: the rest of it was never read")
		})
	}
}

// limitedSource gives n bytes without a newline, then fails the test if it is read again.
type limitedSource struct {
	t    *testing.T
	left int
}

func (s *limitedSource) Read(p []byte) (int, error) {
	if s.left == 0 {
		s.t.Fatal("the reader asked for more input than the line's first max+1 bytes")
	}
	n := min(len(p), s.left, 1000)
	for i := range n {
		p[i] = 'x'
	}
	s.left -= n
	return n, nil
}

// TestLineReaderStopsAtTheLimit: a line is refused as soon as max+1 of its bytes have been
// read, however long it would be, and its start is quoted without copying it.
func TestLineReaderStopsAtTheLimit(t *testing.T) {
	for _, max := range []int{10, 100 << 10, 1 << 20} {
		lr := NewLineReader(&limitedSource{t: t, left: max + 1}, max)
		_, err := lr.ReadLine()
		var tl *LineTooLongError
		require.ErrorAs(t, err, &tl)
		assert.Equal(t, max, tl.Limit)
		assert.LessOrEqual(t, len(tl.Snippet), snippetLen+8)
	}
}

// TestLineReaderBudget: a line longer than the read buffer takes its buffer's capacity
// from the budget, gives it back at the next ReadLine, and is refused when the budget,
// shared with another reader, has too little left; a short line takes nothing.
func TestLineReaderBudget(t *testing.T) {
	long := strings.Repeat("z", 3*ReadBufferSize)
	b := NewBudget(4 * ReadBufferSize)
	a := NewLineReader(strings.NewReader(long+"\nshort\n"), 1<<20).WithBudget(b)
	line, err := a.ReadLine()
	require.NoError(t, err)
	assert.Equal(t, long, string(line))
	held := b.InUse()
	assert.GreaterOrEqual(t, held, int64(len(long)))
	assert.LessOrEqual(t, held, b.Limit())

	other := NewLineReader(strings.NewReader(long+"\n"), 1<<20).WithBudget(b)
	_, err = other.ReadLine()
	require.ErrorIs(t, err, ErrLineMemory, "the budget is held by a's line")
	assert.Contains(t, err.Error(), "max_line_memory")
	assert.Equal(t, held, b.InUse(), "the refused line gave back what it took")

	line, err = a.ReadLine()
	require.NoError(t, err)
	assert.Equal(t, "short", string(line))
	assert.Zero(t, b.InUse(), "the long line's buffer was given back")

	c := NewLineReader(strings.NewReader(long+"\n"), 1<<20).WithBudget(b)
	_, err = c.ReadLine()
	require.NoError(t, err)
	c.Release()
	assert.Zero(t, b.InUse())
}

// A final line without its newline is a line, unless the reader is Strict: then it is
// io.ErrUnexpectedEOF (a message cut short must not be acted on).
func TestLineReaderStrict(t *testing.T) {
	for _, strict := range []bool{false, true} {
		lr := NewLineReader(strings.NewReader("whole\n{\"t\":\"ping\",\"id\":1}"), 0)
		if strict {
			lr.Strict()
		}
		line, err := lr.ReadLine()
		require.NoError(t, err)
		assert.Equal(t, "whole", string(line))
		line, err = lr.ReadLine()
		if strict {
			require.ErrorIs(t, err, io.ErrUnexpectedEOF)
		} else {
			require.NoError(t, err)
			assert.Equal(t, `{"t":"ping","id":1}`, string(line))
			_, err = lr.ReadLine()
			require.ErrorIs(t, err, io.EOF)
		}
	}
}

func TestLineReaderLongerThanBuffer(t *testing.T) {
	big := strings.Repeat("z", 200<<10)
	lr := NewLineReader(strings.NewReader(big+"\nok\n"), 1<<20)
	line, err := lr.ReadLine()
	require.NoError(t, err)
	assert.Len(t, line, len(big))
	line, err = lr.ReadLine()
	require.NoError(t, err)
	assert.Equal(t, "ok", string(line))
}

func TestDecodeWorkerMsg(t *testing.T) {
	for _, tc := range []struct {
		line  string
		t     string
		err   error
		check func(*testing.T, WorkerMsg)
	}{
		{line: `{"t":"ready","v":1}`, t: TReady},
		{line: `{"t":"ready","v":1,"pipeline":true,"lease":1}`, t: TReady, check: func(t *testing.T, m WorkerMsg) {
			assert.True(t, m.Pipeline)
			assert.Equal(t, 1, m.Lease)
		}},
		{line: `{"t":"ready","v":2}`, err: ErrProtocol},
		{line: `{"t":"ready"}`, err: ErrProtocol},
		{line: `{"t":"ok","id":7,"r":{"a":[1,2]}}`, t: TOK, check: func(t *testing.T, m WorkerMsg) {
			assert.EqualValues(t, 7, m.ID)
			assert.JSONEq(t, `{"a":[1,2]}`, string(m.R))
		}},
		{line: `{"t":"ok","id":7}`, t: TOK, check: func(t *testing.T, m WorkerMsg) { assert.Equal(t, "null", string(m.R)) }},
		{line: `{"t":"ok","r":1}`, err: ErrProtocol},
		{line: `{"t":"ok","id":"7"}`, err: ErrProtocol},
		{line: `{"t":"ok","id":-1}`, err: ErrProtocol},
		{line: `{"t":"err","id":7,"e":{"msg":"x","type":"ValueError","trace":"..."}}`, t: TErr},
		{line: `{"t":"err","id":7,"e":"x"}`, err: ErrProtocol},
		{line: `{"t":"err","id":7}`, err: ErrProtocol},
		{line: `{"t":"ok","id":1,"logs":{"x":1}}`, err: ErrProtocol},
		{line: `{"t":"bye","msg":"leaking"}`, t: TBye},
		{line: `{"t":"future-thing","x":1}`, t: "future-thing"},
		{line: `{"id":1}`, err: ErrProtocol},
		{line: `not json`, err: ErrNotObject},
		{line: `["array"]`, err: ErrNotObject},
		{line: `{"t":"ok",`, err: ErrNotObject},
		{line: ``, err: ErrNotObject},
		{line: `{"t":"call","id":1,"m":"x","a":{"no":"array"}}`, err: ErrProtocol},
	} {
		t.Run(tc.line, func(t *testing.T) {
			m, err := DecodeWorkerMsg([]byte(tc.line))
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.t, m.T)
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

func TestAppendCallRoundTrips(t *testing.T) {
	args := json.RawMessage("[1,\"two\",\r\n{\"3\":null}]")
	for _, tc := range []struct {
		name   string
		co, ep uint64
	}{
		{"worker", 0, NoEp},
		{"worker pipelined", 0, 0},
		{"client", 7, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := AppendCall(nil, tc.co, 42, tc.ep, "m\"\n\u2028😀", args)
			require.True(t, bytes.HasSuffix(line, []byte("\n")))
			assert.Equal(t, 1, bytes.Count(line, []byte("\n")), "exactly one line")
			assert.NotContains(t, string(line), "\r")
			line = line[:len(line)-1]
			m, err := DecodeWorkerMsg(line)
			require.NoError(t, err)
			assert.Equal(t, TCall, m.T)
			assert.EqualValues(t, 42, m.ID)
			assert.Equal(t, "m\"\n\u2028😀", m.M)
			assert.JSONEq(t, string(args), string(m.A))
			assert.Equal(t, tc.ep != NoEp, m.HasEp)
			if tc.ep != NoEp {
				assert.Equal(t, tc.ep, m.Ep)
			}
			if tc.co != 0 {
				cm, err := DecodeClientMsg(line)
				require.NoError(t, err)
				assert.Equal(t, ClientMsg{T: TCall, Co: tc.co, ID: 42, Ep: tc.ep, M: m.M, A: m.A}, cm)
			}
		})
	}
}

// TestOneEncoderPerMessage checks that the worker protocol's call and replies are the
// client protocol's without "co", and that AppendClientMsg writes them with the same
// encoders.
func TestOneEncoderPerMessage(t *testing.T) {
	args, r, e, logs := json.RawMessage(`["x"]`), json.RawMessage(`{"n":1}`), json.RawMessage(`{"msg":"m"}`), json.RawMessage(`[{"ts":1,"lvl":"info","msg":"l"}]`)
	for _, tc := range []struct {
		worker, client string
		msg            ClientMsg
	}{
		{
			string(AppendCall(nil, 0, 5, 2, "m", args)),
			string(AppendCall(nil, 9, 5, 2, "m", args)),
			ClientMsg{T: TCall, Co: 9, ID: 5, Ep: 2, M: "m", A: args},
		},
		{
			string(AppendOK(nil, 0, 5, r, logs)),
			string(AppendOK(nil, 9, 5, r, logs)),
			ClientMsg{T: TOK, Co: 9, ID: 5, R: r, Logs: logs},
		},
		{
			string(AppendErr(nil, 0, 5, e, nil)),
			string(AppendErr(nil, 9, 5, e, nil)),
			ClientMsg{T: TErr, Co: 9, ID: 5, E: e},
		},
	} {
		assert.Equal(t, tc.client, strings.Replace(tc.worker, `,"id":`, `,"co":9,"id":`, 1))
		line, err := AppendClientMsg(nil, &tc.msg)
		require.NoError(t, err)
		assert.Equal(t, tc.client, string(line))
		got, err := DecodeClientMsg(bytes.TrimSuffix(line, []byte("\n")))
		require.NoError(t, err)
		assert.Equal(t, tc.msg, got)
		wm, err := DecodeWorkerMsg([]byte(strings.TrimSuffix(tc.worker, "\n")))
		require.NoError(t, err)
		assert.Equal(t, tc.msg.T, wm.T)
	}
	assert.Equal(t, `{"t":"ok","id":1,"r":null}`+"\n", string(AppendOK(nil, 0, 1, nil, nil)))
	assert.Equal(t, `{"t":"aborted","id":3}`+"\n", string(AppendAborted(nil, 3)))
	assert.Equal(t, `{"t":"cancel","id":3}`+"\n", string(AppendCancel(nil, 3)))
	assert.Equal(t, `{"t":"ready","v":1,"pipeline":true}`+"\n", string(AppendReady(nil, true)))
	assert.Equal(t, `{"t":"ready","v":1}`+"\n", string(AppendReady(nil, false)))
	assert.Equal(t, `{"t":"ready","v":1,"pipeline":true,"lease":1}`+"\n", string(AppendReadyLease(nil, true, 1)))
	assert.Equal(t, `{"t":"ready","v":1,"pipeline":true}`+"\n", string(AppendReadyLease(nil, true, 0)))
	assert.Equal(t, `{"t":"bye","msg":"too \"big\""}`+"\n", string(AppendBye(nil, `too "big"`)))
	assert.Equal(t, `{"t":"bye"}`+"\n", string(AppendBye(nil, "")))
}

func TestDecodeClientMsg(t *testing.T) {
	for _, tc := range []struct {
		line string
		err  error
	}{
		{`{"t":"checkout","id":1,"iface":"passwd"}`, nil},
		{`{"t":"checkout","id":1}`, ErrProtocol},
		{`{"t":"checkout","iface":"x"}`, ErrProtocol},
		{`{"t":"call","co":3,"id":1,"m":"hash","a":["x"]}`, nil},
		{`{"t":"call","co":3,"id":1,"a":"x"}`, ErrProtocol},
		{`{"t":"call","id":1}`, ErrProtocol},
		{`{"t":"release","co":3,"retire":true}`, nil},
		{`{"t":"release"}`, ErrProtocol},
		{`{"t":"refused","id":1,"code":"overloaded","msg":"m"}`, nil},
		{`{"t":"err","co":1,"id":1,"e":{"msg":"x"}}`, nil},
		{`{"t":"err","co":1,"id":1}`, ErrProtocol},
		{`{"t":"unknown"}`, nil},
		{`{"id":1}`, ErrProtocol},
		{`{"t":"ping","id":"1"}`, ErrProtocol},
		{`garbage`, ErrNotObject},
	} {
		t.Run(tc.line, func(t *testing.T) {
			_, err := DecodeClientMsg([]byte(tc.line))
			if tc.err == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.err)
			}
		})
	}
}

func TestClientMsgRoundTrip(t *testing.T) {
	in := ClientMsg{T: TOK, Co: 9, ID: 3, R: json.RawMessage(`{"big":9007199254740993}`), Logs: json.RawMessage(`[]`)}
	line, err := AppendClientMsg(nil, &in)
	require.NoError(t, err)
	out, err := DecodeClientMsg(bytes.TrimSuffix(line, []byte("\n")))
	require.NoError(t, err)
	assert.Equal(t, `{"big":9007199254740993}`, string(out.R), "payloads are relayed byte for byte")
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		loop     bool
		bad      bool
	}{
		{in: "unix:/run/taskd/taskd.sock", want: "unix:/run/taskd/taskd.sock", loop: true},
		{in: "unix:///run/taskd/taskd.sock", want: "unix:/run/taskd/taskd.sock", loop: true},
		{in: "unix:relative.sock", bad: true},
		{in: "tcp://127.0.0.1:7000", want: "tcp://127.0.0.1:7000", loop: true},
		{in: "tcp://[::1]:7000", want: "tcp://[::1]:7000", loop: true},
		{in: "tcp://localhost:7000", want: "tcp://localhost:7000", loop: true},
		{in: "tcp://0.0.0.0:7000", want: "tcp://0.0.0.0:7000", loop: false},
		{in: "tcp://example.com:7000", want: "tcp://example.com:7000", loop: false},
		{in: "tcp://nohost", bad: true},
		{in: "tls://0.0.0.0:7443", want: "tls://0.0.0.0:7443", loop: false},
		{in: "tls://127.0.0.1:7443", want: "tls://127.0.0.1:7443", loop: true},
		{in: "tls://[::1]:7443", want: "tls://[::1]:7443", loop: true},
		{in: "tls://nohost", bad: true},
		{in: "tls://host:", bad: true},
		{in: "/run/taskd.sock", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			a, err := ParseAddr(tc.in)
			if tc.bad {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, a.String())
			assert.Equal(t, tc.loop, a.IsLoopback())
		})
	}
}

func TestDefaultAddr(t *testing.T) {
	_, err := ParseAddr(DefaultAddr())
	require.NoError(t, err)
}

func TestErrorsMatch(t *testing.T) {
	var pe *ProtocolError
	_, err := DecodeWorkerMsg([]byte(`{"t":"ok"}`))
	require.True(t, errors.As(err, &pe))
	assert.Contains(t, pe.Error(), `{\"t\":\"ok\"}`)
}

func TestDirectLeaseFields(t *testing.T) {
	m, err := DecodeWorkerMsg([]byte(`{"t":"ready","v":1,"pipeline":true,"lease":1}`))
	require.NoError(t, err)
	assert.Equal(t, 1, m.Lease, "ready announces the lease extension's version")
	_, err = DecodeWorkerMsg([]byte(`{"t":"ready","v":1,"lease":"yes"}`))
	require.ErrorIs(t, err, ErrProtocol, "lease must be an integer")

	for _, in := range []ClientMsg{
		{T: TCheckout, ID: 4, Iface: "e", Direct: true},
		{T: TGranted, ID: 4, Co: 7, Worker: "e-1", PID: 9, N: 1, Direct: true},
		{T: TCheckout, ID: 5, Iface: "e", Once: true, M: "echo", A: []byte(`[1]`), Direct: true, Warm: true},
		{T: TGranted, ID: 5, Co: 8, Worker: "e-1", PID: 9, N: 2, Direct: true, Warm: true},
	} {
		line, err := AppendClientMsg(nil, &in)
		require.NoError(t, err)
		assert.Contains(t, string(line), `"direct":true`)
		out, err := DecodeClientMsg(bytes.TrimSuffix(line, []byte("\n")))
		require.NoError(t, err)
		assert.Equal(t, in, out)
	}
	m2, err := DecodeClientMsg([]byte(`{"t":"reclaim","co":8}`))
	require.NoError(t, err)
	assert.Equal(t, ClientMsg{T: TReclaim, Co: 8}, m2)
	_, err = DecodeClientMsg([]byte(`{"t":"reclaim"}`))
	require.Error(t, err, "reclaim names its checkout")
}

// TestDrainingField: granted and pong say whether taskd is draining; the field
// round-trips, is left out when false, and must be a boolean.
func TestDrainingField(t *testing.T) {
	for _, in := range []ClientMsg{
		{T: TGranted, ID: 4, Co: 7, Worker: "e-1", PID: 9, N: 1, Draining: true},
		{T: TGranted, ID: 5, Co: 8, Worker: "e-1", PID: 9, N: 2, Direct: true, Draining: true},
		{T: TPong, ID: 6, Version: "v", Draining: true},
	} {
		line, err := AppendClientMsg(nil, &in)
		require.NoError(t, err)
		assert.Contains(t, string(line), `"draining":true`)
		var viaJSON ClientMsg
		require.NoError(t, json.Unmarshal(line, &viaJSON), "the hand-written encoder writes JSON that encoding/json reads alike")
		assert.Equal(t, in, viaJSON)
		out, err := DecodeClientMsg(bytes.TrimSuffix(line, []byte("\n")))
		require.NoError(t, err)
		assert.Equal(t, in, out)
	}
	line, err := AppendClientMsg(nil, &ClientMsg{T: TPong, ID: 6, Version: "v"})
	require.NoError(t, err)
	assert.NotContains(t, string(line), "draining")
	_, err = DecodeClientMsg([]byte(`{"t":"pong","id":6,"draining":"yes"}`))
	require.ErrorIs(t, err, ErrProtocol, "draining must be a boolean")
}

// TestSpareField: granted and one-shot answers carry the interface's spare workers, which
// may be negative (a queue); the field round-trips, is left out when 0, and must be an
// integer.
func TestSpareField(t *testing.T) {
	for _, in := range []ClientMsg{
		{T: TGranted, ID: 4, Co: 7, Worker: "e-1", PID: 9, N: 1, Spare: 3},
		{T: TGranted, ID: 5, Co: 8, Worker: "e-1", PID: 9, N: 2, Direct: true, Warm: true, Spare: -2},
		{T: TOK, ID: 6, Worker: "e-1", PID: 9, R: json.RawMessage(`"x"`), Spare: 1},
	} {
		line, err := AppendClientMsg(nil, &in)
		require.NoError(t, err)
		assert.Contains(t, string(line), fmt.Sprintf(`"spare":%d`, in.Spare))
		var viaJSON ClientMsg
		require.NoError(t, json.Unmarshal(line, &viaJSON))
		assert.Equal(t, in, viaJSON)
		out, err := DecodeClientMsg(bytes.TrimSuffix(line, []byte("\n")))
		require.NoError(t, err)
		assert.Equal(t, in, out)
	}
	line, err := AppendClientMsg(nil, &ClientMsg{T: TGranted, ID: 4, Co: 7})
	require.NoError(t, err)
	assert.NotContains(t, string(line), "spare")
	_, err = DecodeClientMsg([]byte(`{"t":"granted","id":6,"co":1,"spare":"many"}`))
	require.ErrorIs(t, err, ErrProtocol, "spare must be an integer")
}
