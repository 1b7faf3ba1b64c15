package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refFields decodes line with encoding/json into its members (exact keys, last one wins),
// the behaviour the fast decoders must match.
func refFields(line []byte) (map[string]json.RawMessage, bool) {
	if !json.Valid(line) || !looksLikeObject(line) {
		return nil, false
	}
	var f map[string]json.RawMessage
	if json.Unmarshal(line, &f) != nil {
		return nil, false
	}
	return f, true
}

// refWorkerMsg is DecodeWorkerMsg written with encoding/json: the reference.
func refWorkerMsg(line []byte) (WorkerMsg, error) {
	f, ok := refFields(line)
	if !ok {
		return WorkerMsg{}, ErrNotObject
	}
	if !utf8.Valid(line) { // encoding/json would replace the bytes; taskd refuses them
		return WorkerMsg{}, NewProtocolError(line, "not UTF-8")
	}
	var m WorkerMsg
	var t *string
	var v *int
	var id, ep *uint64
	for key, dst := range map[string]any{"t": &t, "v": &v, "id": &id, "m": &m.M, "msg": &m.Msg, "pipeline": &m.Pipeline, "lease": &m.Lease, "ep": &ep} {
		if raw, ok := f[key]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				return WorkerMsg{}, NewProtocolError(line, "field %s: %v", key, err)
			}
		}
	}
	m.A, m.R, m.E, m.Logs = f["a"], f["r"], f["e"], f["logs"]
	if t == nil {
		return WorkerMsg{}, NewProtocolError(line, "no t")
	}
	m.T = *t
	if v != nil {
		m.V = *v
	}
	if id != nil {
		m.ID = *id
	}
	if ep != nil {
		m.Ep, m.HasEp = *ep, true
	}
	fail := func() (WorkerMsg, error) { return m, NewProtocolError(line, "ref") }
	switch m.T {
	case TReady:
		if v == nil || m.V != ProtocolVersion {
			return fail()
		}
	case TOK:
		if id == nil {
			return fail()
		}
		if len(m.R) == 0 {
			m.R = json.RawMessage("null")
		}
	case TErr:
		if id == nil || !looksLikeObject(m.E) {
			return fail()
		}
	case TCall:
		if id == nil {
			return fail()
		}
		if len(m.A) == 0 {
			m.A = json.RawMessage("[]")
		} else if !looksLikeArray(m.A) {
			return fail()
		}
	case TCancel, TAborted:
		if id == nil {
			return fail()
		}
	}
	if len(m.Logs) > 0 && !looksLikeArray(m.Logs) && string(m.Logs) != "null" {
		return fail()
	}
	return m, nil
}

func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotObject):
		return "not-object"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	}
	return "other: " + err.Error()
}

var scanSeeds = []string{
	`{"t":"ok","id":1,"r":[1,{"a":"😀"}],"logs":[{"ts":1.5,"lvl":"info","msg":"m"}]}`,
	`{"t":"ready","v":1}`, `{"t":"err","id":2,"e":{"msg":"x\n\"y\"","type":"T","trace":"t"}}`,
	`{"t":"call","id":3,"m":"h\u00e9","a":[-0.5e+10,true,false,null,"\ud83d\ude00"]}`,
	` { "t" : "ok" , "id" : 7 } `, `{"\u0074":"ok","id":1}`, `{"t":"ok","t":"err","id":1}`,
	`{"T":"ok","id":1}`, `{"t":"ok","id":1.0}`, `{"t":"ok","id":01}`, `{"t":"ok","id":-0}`,
	`{"t":"ok","id":18446744073709551616}`, `{"t":null}`, `{"t":"ok","id":null}`, `{}`, `{"a":[}`,
	`{"t":"x","r":"\x"}`, "{\"t\":\"a\tb\"}", `{"t":"ok","id":1}x`, `[{"t":"ok"}]`, `{"t":"ok",}`,
	`{"t":"ok","id":1,"r":1e}`, `{"t":"ok","id":1,"r":.5}`, `{"t":"ok","id":1,"r":"\u12"}`, "{\"t\":\"\xff\"}",
	// Not UTF-8 inside strings: a stray continuation byte, a truncated sequence before the
	// closing quote, an overlong encoding, a surrogate, a code point past U+10FFFF; and
	// the replacement character itself, which is valid.
	"{\"t\":\"ok\",\"id\":1,\"r\":[\"a\x80b\"]}", "{\"t\":\"ok\",\"id\":1,\"r\":\"\xe2\x82\"}", "{\"t\":\"ok\",\"id\":1,\"r\":\"\xc0\xaf\"}",
	"{\"t\":\"ok\",\"id\":1,\"r\":\"\xed\xa0\x80\"}", "{\"t\":\"ok\",\"id\":1,\"r\":\"\xf4\x90\x80\x80\"}", "{\"t\":\"ok\",\"id\":1,\"r\":\"\xef\xbf\xbd\"}",
	"{\"t\":\"ok\",\"id\":1,\"r\":1}\xff", "{\"t\":\"ok\",\"id\":1,\"r\xff\":1}", `{"t":"ok","id":1,"r":"\ud800"}`,
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
}

func FuzzScanMatchesEncodingJSON(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		_, ok := scanObject(line, nil)
		want := json.Valid(line) && looksLikeObject(line) && utf8.Valid(line)
		if ok != want {
			t.Fatalf("scanObject(%q) = %v, encoding/json and utf8.Valid say %v", line, ok, want)
		}
		got, gerr := DecodeWorkerMsg(line)
		ref, rerr := refWorkerMsg(line)
		if errClass(gerr) != errClass(rerr) {
			t.Fatalf("DecodeWorkerMsg(%q): %v; reference: %v", line, gerr, rerr)
		}
		if gerr == nil && !reflect.DeepEqual(normalize(got), normalize(ref)) {
			t.Fatalf("DecodeWorkerMsg(%q) = %+v; reference %+v", line, got, ref)
		}
	})
}

// normalize makes nil and empty raw fields compare equal.
func normalize(m WorkerMsg) WorkerMsg {
	for _, p := range []*json.RawMessage{&m.A, &m.R, &m.E, &m.Logs} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	return m
}

// FuzzAppendClientMsg checks the hand-written encoder against encoding/json: whatever a
// decoded message holds, its encoding decodes to the same message, and means the same as
// json.Marshal's.
func FuzzAppendClientMsg(f *testing.F) {
	for _, s := range []string{
		`{"t":"ok","co":1,"id":2,"r":{"a":[1,"\u2028😀"]},"logs":[]}`, `{"t":"granted","id":1,"co":2,"worker":"w-\"1\"","pid":3,"n":4}`,
		`{"t":"refused","id":1,"code":"overloaded","msg":"line\nbreak \u0001 \\ end"}`, `{"t":"call","co":1,"id":1,"m":"x","a":[],"ep":3}`,
		`{"t":"checkout","id":1,"iface":"p","keep":true}`, `{"t":"release","co":1,"retire":true}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := DecodeClientMsg(line)
		if err != nil {
			return
		}
		out, err := AppendClientMsg(nil, &m)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(out, []byte("\n")) != 1 || !json.Valid(out[:len(out)-1]) {
			t.Fatalf("encoding of %q is not one valid JSON line: %q", line, out)
		}
		m2, err := DecodeClientMsg(out[:len(out)-1])
		if err != nil {
			t.Fatalf("re-decoding %q: %v", out, err)
		}
		std, _ := json.Marshal(&m)
		var a, b map[string]any
		if json.Unmarshal(out, &a) != nil || json.Unmarshal(std, &b) != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("fast encoding %s differs from encoding/json's %s", out, std)
		}
		if m.T != m2.T || m.ID != m2.ID || m.Co != m2.Co || m.M != m2.M || m.Msg != m2.Msg || m.Worker != m2.Worker {
			t.Fatalf("round trip changed the message: %+v → %+v", m, m2)
		}
	})
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\s", "ctl\x00\x01\x1f\n\r\t", "😀 \u2028", "bad \xff utf8"} {
		var got string
		require := json.Unmarshal(AppendString(nil, s), &got)
		if require != nil {
			t.Fatalf("AppendString(%q) is not JSON: %v", s, require)
		}
		want, _ := json.Marshal(s)
		var wantS string
		json.Unmarshal(want, &wantS)
		if got != wantS {
			t.Errorf("AppendString(%q) decodes to %q, encoding/json's to %q", s, got, wantS)
		}
	}
}

func TestInternName(t *testing.T) {
	a := internName([]byte("hash"))
	assert.Equal(t, "hash", a)
	assert.Equal(t, 0.0, testing.AllocsPerRun(100, func() { _ = internName([]byte("hash")) }), "a cached name costs no allocation")
	long := strings.Repeat("x", maxInterned+1)
	assert.Equal(t, long, internName([]byte(long)))
	// Many names (more than the cache holds) from several goroutines: each comes back
	// intact, whatever was evicted meanwhile.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 5000 {
				name := fmt.Sprintf("m%d-%d", g, i%700)
				if got := internName([]byte(name)); got != name {
					t.Errorf("internName(%q) = %q", name, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestHotDecodesAllocateNothing: the messages relayed on every call decode without an
// allocation (their payloads alias the line; types, codes and names are interned).
func TestHotDecodesAllocateNothing(t *testing.T) {
	lines := map[string]struct {
		line   string
		decode func([]byte) error
	}{
		"client call": {`{"t":"call","co":7,"id":42,"ep":0,"m":"hash","a":["secret",{"n":1}]}`, decodeClient},
		"client ok":   {`{"t":"ok","co":7,"id":42,"r":{"hash":"$2a$10$abc"},"logs":[]}`, decodeClient},
		"worker call": {`{"t":"call","id":42,"ep":0,"m":"hash","a":["secret",{"n":1}]}`, decodeWorker},
		"worker ok":   {`{"t":"ok","id":42,"r":{"hash":"$2a$10$abc"},"logs":[]}`, decodeWorker},
	}
	for name, c := range lines {
		line := []byte(c.line)
		require.NoError(t, c.decode(line), name) // and the method name enters the cache
		assert.Zero(t, testing.AllocsPerRun(100, func() { _ = c.decode(line) }), name)
	}
}

func decodeClient(line []byte) error { _, err := DecodeClientMsg(line); return err }
func decodeWorker(line []byte) error { _, err := DecodeWorkerMsg(line); return err }
