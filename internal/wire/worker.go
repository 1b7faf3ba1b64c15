package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ProtocolVersion is the worker protocol version this package speaks.
const ProtocolVersion = 1

// Worker protocol message types (the "t" field).
const (
	TReady  = "ready"  // worker → taskd: setup finished
	TCall   = "call"   // taskd → worker (and client → taskd): run a method
	TOK     = "ok"     // reply: success
	TErr    = "err"    // reply: the call raised
	TCancel = "cancel" // caller gave up on a call
	TDone   = "done"   // taskd → worker: the checkout was released
	TBye    = "bye"    // worker → taskd: retire me after this checkout
	// TAborted (worker → taskd) answers a call the worker did not run because its "ep" is
	// behind the worker's error count (pipelining; see docs/worker-protocol.md).
	TAborted = "aborted"
)

// ErrNotObject reports a line that is not a JSON object. On a worker's stdout such a line
// is stray output (logged and ignored), not a protocol error.
var ErrNotObject = errors.New("wire: line is not a JSON object")

// ErrProtocol is matched (errors.Is) by every *ProtocolError.
var ErrProtocol = errors.New("wire: protocol error")

// ErrInvalidUTF8 is matched (errors.Is), besides ErrProtocol, by the *ProtocolError of a
// line that is a JSON object but not valid UTF-8. Both protocols carry UTF-8 only, and
// taskd relays payloads as they are, so it refuses such a line rather than pass it on.
var ErrInvalidUTF8 = errors.New("wire: not valid UTF-8")

// ProtocolError reports a JSON object that breaks a protocol: a missing or mistyped field,
// an unsupported version, or bytes that are not UTF-8. It quotes a short snippet of the
// offending line.
type ProtocolError struct {
	Reason  string
	Snippet string
	utf8    bool // the line is not valid UTF-8 (ErrInvalidUTF8)
}

func (e *ProtocolError) Error() string {
	return fmt.Sprintf("protocol error: %s in %s", e.Reason, e.Snippet)
}

// Is makes errors.Is(err, ErrProtocol) true, and errors.Is(err, ErrInvalidUTF8) for a
// line that is not valid UTF-8.
func (e *ProtocolError) Is(target error) bool {
	return target == ErrProtocol || e.utf8 && target == ErrInvalidUTF8
}

// notUTF8 reports whether line, which the scanner refused, would be a JSON object but for
// bytes that are not UTF-8 (the scanner refuses both alike). It runs only for a refused
// line, so it may be slow.
func notUTF8(line []byte) bool {
	return !utf8.Valid(line) && looksLikeObject(line) && json.Valid(line)
}

// invalidUTF8 is the error for a line that notUTF8 found.
func invalidUTF8(line []byte) *ProtocolError {
	at := 0
	for at < len(line) {
		r, n := utf8.DecodeRune(line[at:])
		if r == utf8.RuneError && n == 1 {
			break
		}
		at += n
	}
	e := NewProtocolError(line, "not valid UTF-8 (byte 0x%02x at offset %d): JSON text must be UTF-8; send binary data as base64", line[at], at)
	e.utf8 = true
	return e
}

// NewProtocolError builds a *ProtocolError quoting line.
func NewProtocolError(line []byte, format string, args ...any) *ProtocolError {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...), Snippet: Snippet(line)}
}

// WorkerMsg is one message of worker protocol v1. Payload fields stay raw JSON: taskd
// relays them without decoding, and the SDKs decode them into the caller's types.
type WorkerMsg struct {
	T    string          `json:"t"`
	V    int             `json:"v,omitempty"`
	ID   uint64          `json:"id,omitempty"`
	M    string          `json:"m,omitempty"`
	A    json.RawMessage `json:"a,omitempty"`
	R    json.RawMessage `json:"r,omitempty"`
	E    json.RawMessage `json:"e,omitempty"`
	Logs json.RawMessage `json:"logs,omitempty"`
	Msg  string          `json:"msg,omitempty"`
	// Pipeline, on "ready", announces that the worker applies the "ep" rule itself, so
	// taskd may send it several calls of a checkout without waiting.
	Pipeline bool `json:"pipeline,omitempty"`
	// Lease, on "ready", is the version of the direct-lease extension the worker speaks
	// (1; 0: none): taskd may hand it direct leases over its control socket
	// (docs/worker-protocol.md, "Direct leases").
	Lease int `json:"lease,omitempty"`
	// Ep, on a call to a pipelining worker, is how many errors of this checkout the
	// application had seen when it made the call; HasEp reports that it was present.
	Ep    uint64 `json:"ep,omitempty"`
	HasEp bool   `json:"-"`
}

// DecodeWorkerMsg decodes one line of worker protocol v1 (either direction) and checks that
// the message has the fields its type requires. It returns ErrNotObject for a line that is
// not a JSON object and a *ProtocolError for an object that breaks the protocol, or that
// is not valid UTF-8 (ErrInvalidUTF8). Unknown types and unknown fields are accepted
// (forward compatibility); the caller ignores them.
//
// The line is validated once and its payloads (A, R, E, Logs) are not decoded: they alias
// line, so they are valid only until line's buffer is reused. Copy them to keep them.
func DecodeWorkerMsg(line []byte) (WorkerMsg, error) {
	var fbuf [12]field
	fields, ok := scanObject(line, fbuf[:0])
	if !ok {
		if notUTF8(line) {
			return WorkerMsg{}, invalidUTF8(line)
		}
		return WorkerMsg{}, ErrNotObject
	}
	var m WorkerMsg
	var hasT, hasV, hasID bool
	for _, f := range fields {
		var err error
		switch string(fieldName(f.key)) {
		case "t":
			m.T, hasT, err = decodeString(f.val)
		case "v":
			m.V, hasV, err = decodeInt(f.val)
		case "id":
			m.ID, hasID, err = decodeUint(f.val)
		case "m":
			m.M, _, err = decodeName(f.val)
		case "msg":
			m.Msg, _, err = decodeString(f.val)
		case "pipeline":
			m.Pipeline, err = decodeBool(f.val)
		case "lease":
			m.Lease, _, err = decodeInt(f.val)
		case "ep":
			m.Ep, m.HasEp, err = decodeUint(f.val)
		case "a":
			m.A = f.val
		case "r":
			m.R = f.val
		case "e":
			m.E = f.val
		case "logs":
			m.Logs = f.val
		}
		if err != nil {
			return WorkerMsg{}, NewProtocolError(line, "field %s: %v", unquoteKey(f.key), err)
		}
	}
	if !hasT {
		return WorkerMsg{}, NewProtocolError(line, `object without "t"`)
	}
	switch m.T {
	case TReady:
		if !hasV {
			return m, NewProtocolError(line, `"ready" without "v"`)
		}
		if m.V != ProtocolVersion {
			return m, NewProtocolError(line, "unsupported protocol version %d (taskd speaks %d)", m.V, ProtocolVersion)
		}
	case TCall, TOK, TErr, TCancel, TAborted:
		if !hasID {
			return m, NewProtocolError(line, "%q without \"id\"", m.T)
		}
	}
	return m, checkPayloads(line, m.T, &m.A, &m.R, m.E, m.Logs)
}

// checkPayloads applies the rules that both protocols share to the payloads of a message
// of type t, and fills in their defaults: a call's "a" is an array ([] if absent), an
// ok's "r" is null if absent, an err's "e" is an object, and "logs" is an array or null.
func checkPayloads(line []byte, t string, a, r *json.RawMessage, e, logs json.RawMessage) error {
	switch t {
	case TCall:
		if err := callArgs(line, a); err != nil {
			return err
		}
	case TOK:
		if len(*r) == 0 {
			*r = json.RawMessage("null")
		}
	case TErr:
		if !looksLikeObject(e) {
			return NewProtocolError(line, `"err" without an "e" object`)
		}
	}
	if len(logs) > 0 && !looksLikeArray(logs) && string(logs) != "null" {
		return NewProtocolError(line, `"logs" must be an array`)
	}
	return nil
}

// callArgs checks the arguments of a call: an array, [] if absent.
func callArgs(line []byte, a *json.RawMessage) error {
	if len(*a) == 0 {
		*a = json.RawMessage("[]")
	} else if !looksLikeArray(*a) {
		return NewProtocolError(line, `"a" must be an array`)
	}
	return nil
}

// fieldName returns a member's key without quotes; escaped keys are unescaped.
func fieldName(k []byte) []byte {
	if hasEscape(k) {
		return []byte(unquoteKey(k))
	}
	return k[1 : len(k)-1]
}

// ErrorPayload is the "e" object of an "err" reply.
type ErrorPayload struct {
	Msg   string `json:"msg"`
	Type  string `json:"type,omitempty"`
	Trace string `json:"trace,omitempty"`
}

// LogRecord is one element of the "logs" array of a reply: a log record made by the
// worker during the call. TS is Unix seconds with a fraction.
type LogRecord struct {
	TS  float64         `json:"ts"`
	Lvl string          `json:"lvl"`
	Msg string          `json:"msg"`
	F   json.RawMessage `json:"f,omitempty"`
}

func looksLikeObject(b []byte) bool { return firstByte(b) == '{' }
func looksLikeArray(b []byte) bool  { return firstByte(b) == '[' }

func firstByte(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}
