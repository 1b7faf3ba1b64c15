package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// The seed corpora below run on every `go test`; `go test -fuzz=FuzzX` explores further.

func FuzzDecodeWorkerMsg(f *testing.F) {
	for _, s := range []string{
		`{"t":"ready","v":1}`, `{"t":"ready","v":1,"pipeline":true,"lease":1}`, `{"t":"ready","v":1,"lease":-1}`, `{"t":"ready","v":1,"lease":"1"}`, `{"t":"ok","id":1,"r":[1,{"a":"😀"}],"logs":[{"ts":1.5,"lvl":"info","msg":"m"}]}`,
		`{"t":"err","id":2,"e":{"msg":"x","type":"T","trace":"t"}}`, `{"t":"bye"}`, `{"t":"call","id":3,"m":"x","a":[]}`,
		`{"t":"ok","id":18446744073709551615}`, `{"t":"ok","id":1e3}`, `garbage`,
		`{"t":"call","id":4,"ep":0,"a":[1,` + "\r" + `2]}`, `{"t":"err","id":5,"e":{},"logs":null}`, `{"t":"ok","id":0,"a":[0],"m":"x"}`, `{`, `{"t":null}`, "\x00",
		"{\"t\":\"ok\",\"id\":1,\"r\":\"\xff\"}", "{\"t\":\"err\",\"id\":1,\"e\":{\"msg\":\"\xc3\"}}", "{\"t\":\"ok\",\"id\":1,\"logs\":[{\"msg\":\"\xed\xa0\x80\"}]}",
		"{\"t\":\"call\",\"id\":1,\"m\":\"h\xe9\"}", "\xff{}", "{\"t\":\"ok\",\"id\":1,\"r\":\"\xef\xbf\xbd\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := DecodeWorkerMsg(line)
		if err != nil {
			if !errors.Is(err, ErrNotObject) && !errors.Is(err, ErrProtocol) {
				t.Fatalf("unexpected error kind %T: %v", err, err)
			}
			if errors.Is(err, ErrInvalidUTF8) != (json.Valid(line) && looksLikeObject(line) && !utf8.Valid(line)) {
				t.Fatalf("%q: %v: ErrInvalidUTF8 is for a JSON object that is not valid UTF-8, and only for it", line, err)
			}
			return
		}
		if !json.Valid(line) || !utf8.Valid(line) {
			t.Fatalf("accepted invalid JSON or UTF-8 %q", line)
		}
		for _, raw := range []json.RawMessage{m.A, m.R, m.E, m.Logs} {
			if len(raw) > 0 && !json.Valid(raw) {
				t.Fatalf("payload is not valid JSON: %q", raw)
			}
		}
		// What the shared encoders write must decode to the same message.
		var out []byte
		switch m.T {
		case TCall:
			ep := NoEp
			if m.HasEp {
				ep = m.Ep
			}
			out = AppendCall(nil, 0, m.ID, ep, m.M, m.A)
		case TOK:
			out = AppendOK(nil, 0, m.ID, m.R, m.Logs)
		case TErr:
			out = AppendErr(nil, 0, m.ID, m.E, m.Logs)
		default:
			return
		}
		if bytes.Count(out, []byte("\n")) != 1 {
			t.Fatalf("encoding is not one line: %q", out)
		}
		m2, err := DecodeWorkerMsg(bytes.TrimSuffix(out, []byte("\n")))
		if err != nil || m2.T != m.T || m2.ID != m.ID ||
			!samePayload(payloadOf(m.T, m.A, m.R, m.E, m.Logs), payloadOf(m2.T, m2.A, m2.R, m2.E, m2.Logs)) ||
			m.T == TCall && (m2.M != m.M || m2.Ep != m.Ep || m2.HasEp != m.HasEp) {
			t.Fatalf("%s does not round-trip: %q → %q: %+v, %v", m.T, line, out, m2, err)
		}
	})
}

// payloadOf returns what a call or a reply of type t carries: its args, result or
// error, and its logs (a call has none). Other fields are not part of the message.
func payloadOf(t string, a, r, e, logs json.RawMessage) [2]json.RawMessage {
	switch t {
	case TCall:
		return [2]json.RawMessage{a, nil}
	case TOK:
		return [2]json.RawMessage{r, logs}
	}
	return [2]json.RawMessage{e, logs}
}

// samePayload reports whether p and q are the same but for white space.
func samePayload(p, q [2]json.RawMessage) bool { return sameJSON(p[0], q[0]) && sameJSON(p[1], q[1]) }

// sameJSON reports whether a and b are the same JSON text but for white space.
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

func FuzzDecodeClientMsg(f *testing.F) {
	for _, s := range []string{
		`{"t":"checkout","id":1,"iface":"passwd","keep":true}`, `{"t":"call","co":1,"id":1,"m":"hash","a":["s"]}`,
		`{"t":"release","co":1,"retire":true}`, `{"t":"abort","co":1,"msg":"x"}`, `{"t":"ping","id":9}`,
		`{"t":"status","id":1,"status":{"version":"x","interfaces":[{"name":"a","workers":[]}]}}`,
		`{"t":"granted","id":1,"co":2,"worker":"w-1","pid":3,"n":1}`, `{"t":"granted","id":1,"co":2,"direct":true}`, `{"t":"granted","id":1,"co":2,"draining":true}`, `{"t":"granted","id":1,"co":2,"spare":-3}`, `{"t":"ok","id":1,"worker":"w-1","r":1,"spare":2}`, `{"t":"pong","id":1,"version":"v","draining":true}`, `{"t":"checkout","id":1,"iface":"e","direct":1}`, `{"t":"call","co":1,"id":1,"a":5}`, `[]`,
		`{"t":"call","co":1,"id":2,"ep":3,"m":"x","a":[` + "\r" + `]}`, `{"t":"ok","co":1,"id":2,"r":{"x":1},"logs":[]}`,
		`{"t":"err","co":1,"id":2,"e":{"msg":"m"},"msg":"dropped"}`, `{"t":"ok","co":1,"id":2,"logs":"x"}`,
		"{\"t\":\"call\",\"co\":1,\"id\":2,\"m\":\"x\",\"a\":[\"\xff\xfe\"]}", "{\"t\":\"checkout\",\"id\":3,\"iface\":\"e\",\"once\":true,\"a\":[\"\x80\"]}",
		"{\"t\":\"call\",\"co\":1,\"a\":[\"\xc3\"]}", "{\"t\":\"release\",\"co\":1,\"x\":\"\xf8\"}",
		`{"t":"admin","id":4,"op":"scale","iface":"e","min_idle":0,"max_workers":3}`, `{"t":"admin","id":5,"op":"kill","worker":"e-3"}`,
		`{"t":"adminok","id":4,"msg":"done"}`, `{"t":"admin","id":6}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := DecodeClientMsg(line)
		if err != nil {
			if !errors.Is(err, ErrNotObject) && !errors.Is(err, ErrProtocol) {
				t.Fatalf("unexpected error kind %T: %v", err, err)
			}
			if errors.Is(err, ErrInvalidUTF8) {
				// Refused, but decoded as well as it could be: the caller names the request.
				if utf8.Valid(line) || m.T == "" || !utf8.ValidString(m.T+m.M+m.Iface+m.Msg) || !utf8.Valid(m.A) {
					t.Fatalf("%q: %v, with %+v", line, err, m)
				}
			}
			return
		}
		if !utf8.Valid(line) {
			t.Fatalf("accepted invalid UTF-8 %q", line)
		}
		out, err := AppendClientMsg(nil, &m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if bytes.Count(out, []byte("\n")) != 1 {
			t.Fatalf("encoding is not one line: %q", out)
		}
		m2, err := DecodeClientMsg(bytes.TrimSuffix(out, []byte("\n")))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %q: %v", out, err)
		}
		switch m.T {
		case TCall, TOK, TErr: // written by the encoders the worker protocol shares
			if m2.T != m.T || m2.Co != m.Co || m2.ID != m.ID ||
				!samePayload(payloadOf(m.T, m.A, m.R, m.E, m.Logs), payloadOf(m2.T, m2.A, m2.R, m2.E, m2.Logs)) ||
				m.T == TCall && (m2.M != m.M || m2.Ep != m.Ep) {
				t.Fatalf("%s does not round-trip: %q → %q: %+v", m.T, line, out, m2)
			}
		}
	})
}

// FuzzLineReader reads in with a small read buffer (so that long lines are common) and a
// budget: every line within the limit comes back intact and in order until the first one
// that is too long or finds the budget short, which stops the reader; the budget is given
// back in full.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), 2, 4, 100)
	f.Add([]byte("0123456789\n"), 4, 4, 100)
	f.Add([]byte("0123456789\nab\n0123456789abcdef\n"), 20, 3, 16)
	f.Fuzz(func(t *testing.T, in []byte, max, bufSize, budget int) {
		if max <= 0 || max > 1<<16 || bufSize <= 0 || bufSize > 64 || budget < 0 {
			return
		}
		b := NewBudget(int64(budget))
		lr := NewLineReader(iotest.HalfReader(bytes.NewReader(in)), max).WithBudget(b)
		lr.rbuf = lr.rbuf[:bufSize]
		var got [][]byte
		var stop error
		for range len(in) + 2 {
			line, err := lr.ReadLine()
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, ErrLineTooLong) || errors.Is(err, ErrLineMemory) {
				stop = err
				_, again := lr.ReadLine()
				if again != err {
					t.Fatalf("after %v, ReadLine returned %v", err, again)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(line) > max {
				t.Fatalf("line of %d bytes over max %d", len(line), max)
			}
			if b.InUse() > int64(budget) {
				t.Fatalf("%d bytes taken from a budget of %d", b.InUse(), budget)
			}
			got = append(got, append([]byte(nil), line...))
		}
		lr.Release()
		if b.InUse() != 0 {
			t.Fatalf("%d bytes of the budget not given back", b.InUse())
		}
		var want [][]byte
		lines := bytes.SplitAfter(in, []byte("\n"))
		if n := len(in); n == 0 || in[n-1] == '\n' {
			lines = lines[:len(lines)-1] // nothing after the final newline
		}
		for _, l := range lines {
			l = bytes.TrimSuffix(l, []byte("\n"))
			if len(l) > max {
				if !errors.Is(stop, ErrLineTooLong) && !errors.Is(stop, ErrLineMemory) {
					t.Fatalf("a line of %d bytes over max %d was not refused: %v", len(l), max, stop)
				}
				break
			}
			want = append(want, l)
		}
		if errors.Is(stop, ErrLineMemory) {
			want = want[:min(len(got), len(want))] // the budget ran out on the line after
		}
		if len(got) != len(want) {
			t.Fatalf("got %d lines, want %d (stopped by %v)", len(got), len(want), stop)
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("line %d: %q, want %q", i, got[i], want[i])
			}
		}
	})
}

// FuzzParseAddr: ParseAddr never panics, and an address it accepts prints (String) as one
// it parses back to the same Addr.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"unix:/run/taskd/taskd.sock", "unix:///a/b", "tcp://127.0.0.1:7000",
		"tls://0.0.0.0:7443", "tls://[::1]:1", "tls://x", "tcp://:", "unix:", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			return
		}
		b, err := ParseAddr(a.String())
		if err != nil {
			t.Fatalf("%q parsed as %+v, whose String %q does not parse: %v", s, a, a.String(), err)
		}
		if a != b {
			t.Fatalf("%q parsed as %+v, but its String %q as %+v", s, a, a.String(), b)
		}
	})
}
