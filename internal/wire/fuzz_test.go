package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// The seed corpora below run on every `go test`; `go test -fuzz=FuzzX` explores further.

func FuzzDecodeWorkerMsg(f *testing.F) {
	for _, s := range []string{
		`{"t":"ready","v":1}`, `{"t":"ok","id":1,"r":[1,{"a":"😀"}],"logs":[{"ts":1.5,"lvl":"info","msg":"m"}]}`,
		`{"t":"err","id":2,"e":{"msg":"x","type":"T","trace":"t"}}`, `{"t":"bye"}`, `{"t":"call","id":3,"m":"x","a":[]}`,
		`{"t":"ok","id":18446744073709551615}`, `{"t":"ok","id":1e3}`, `garbage`, `{`, `{"t":null}`, "\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := DecodeWorkerMsg(line)
		if err != nil {
			if !errors.Is(err, ErrNotObject) && !errors.Is(err, ErrProtocol) {
				t.Fatalf("unexpected error kind %T: %v", err, err)
			}
			return
		}
		if json.Valid(line) == false {
			t.Fatalf("accepted invalid JSON %q", line)
		}
		for _, raw := range []json.RawMessage{m.A, m.R, m.E, m.Logs} {
			if len(raw) > 0 && !json.Valid(raw) {
				t.Fatalf("payload is not valid JSON: %q", raw)
			}
		}
		if m.T == TCall {
			// What taskd would send must decode to the same call.
			out := AppendCall(nil, m.ID, m.M, m.A)
			m2, err := DecodeWorkerMsg(bytes.TrimSuffix(out, []byte("\n")))
			if err != nil || m2.ID != m.ID || m2.M != m.M {
				t.Fatalf("call does not round-trip: %q → %q: %v", line, out, err)
			}
		}
	})
}

func FuzzDecodeClientMsg(f *testing.F) {
	for _, s := range []string{
		`{"t":"checkout","id":1,"iface":"passwd","keep":true}`, `{"t":"call","co":1,"id":1,"m":"hash","a":["s"]}`,
		`{"t":"release","co":1,"retire":true}`, `{"t":"abort","co":1,"msg":"x"}`, `{"t":"ping","id":9}`,
		`{"t":"status","id":1,"status":{"version":"x","interfaces":[{"name":"a","workers":[]}]}}`,
		`{"t":"granted","id":1,"co":2,"worker":"w-1","pid":3,"n":1}`, `{"t":"call","co":1,"id":1,"a":5}`, `[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := DecodeClientMsg(line)
		if err != nil {
			if !errors.Is(err, ErrNotObject) && !errors.Is(err, ErrProtocol) {
				t.Fatalf("unexpected error kind %T: %v", err, err)
			}
			return
		}
		out, err := AppendClientMsg(nil, &m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if bytes.Count(out, []byte("\n")) != 1 {
			t.Fatalf("encoding is not one line: %q", out)
		}
		if _, err := DecodeClientMsg(bytes.TrimSuffix(out, []byte("\n"))); err != nil {
			t.Fatalf("re-encoded message does not decode: %q: %v", out, err)
		}
	})
}

func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), 2)
	f.Add([]byte("0123456789\n"), 4)
	f.Fuzz(func(t *testing.T, in []byte, max int) {
		if max <= 0 || max > 1<<16 {
			return
		}
		lr := NewLineReader(bytes.NewReader(in), max)
		var got [][]byte
		for range len(in) + 2 {
			line, err := lr.ReadLine()
			if errors.Is(err, io.EOF) {
				break
			}
			if errors.Is(err, ErrLineTooLong) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(line) > max {
				t.Fatalf("line of %d bytes over max %d", len(line), max)
			}
			got = append(got, append([]byte(nil), line...))
		}
		// Every line within the limit comes back intact and in order.
		var want [][]byte
		for _, l := range bytes.SplitAfter(in, []byte("\n")) {
			l = bytes.TrimSuffix(l, []byte("\n"))
			if len(l) <= max {
				want = append(want, l)
			}
		}
		if n := len(in); n == 0 || in[n-1] == '\n' {
			want = want[:len(want)-1] // nothing after the final newline
		}
		if len(got) != len(want) {
			t.Fatalf("got %d lines, want %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("line %d: %q, want %q", i, got[i], want[i])
			}
		}
	})
}
