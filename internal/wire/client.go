package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// Client protocol message types. Requests flow from a client (pkg/client, taskctl) to taskd;
// replies flow back. Calls, results and cancels reuse the worker protocol's type names.
const (
	// client → taskd
	TCheckout = "checkout" // {id, iface, keep?, max?, once?, m?, a?}: ask for an exclusive worker
	TAbandon  = "abandon"  // {id}: the caller gave up on checkout request id
	TRelease  = "release"  // {co, retire?}: give the worker back (or retire it)
	TAbort    = "abort"    // {co, msg}: fatal: kill the checkout's worker
	TPing     = "ping"     // {id}
	TStatus   = "status"   // {id}
	TReload   = "reload"   // {id}: re-read the config file and apply it (see ReloadReport)
	TLogs     = "logs"     // {id, iface?, follow?}: workers' recent stderr lines; also the answer {id, lines, dropped?} (see LogLine)
	TAdmin    = "admin"    // {id, op, iface?, worker?, min_idle?, max_workers?}: steer a live daemon (the Op* constants)
	// THello {name?}: the client names itself (the program's name by default) for taskd's
	// logs and the checkouts report. Sent first on a connection; needs no answer.
	THello = "hello"
	// TCheckouts {id, iface?}: who holds which worker (see CheckoutInfo); read-only. Its
	// answer is {t:"checkouts", id, checkouts}, or refused (unknown_interface).
	TCheckouts = "checkouts"
	// TCall {co, id, m, a} and TCancel {co, id} are shared with the worker protocol.

	// taskd → client
	TGranted  = "granted"  // {id, co, worker, pid, n}: checkout id got a worker
	TRefused  = "refused"  // {id, code, msg}: a request failed (checkout, ping, status)
	TFail     = "fail"     // {co, id, code, msg}: one call failed without running (e.g. aborted)
	TLost     = "lost"     // {co, code, msg}: the checkout is dead; every outstanding call fails
	TPong     = "pong"     // {id, version}
	TFatal    = "fatal"    // {msg, code?}: the connection broke the protocol, or is refused (code); taskd closes it
	TReloaded = "reloaded" // {id, reload}: the reload was applied; a config that is not valid is refused (invalid_config)
	TAdminOK  = "adminok"  // {id, msg}: the admin request was done; msg says what it did
	// TReclaim {co}: taskd wants the worker of warm lease co back (another checkout waits,
	// or the interface drains or reloads): the client releases it now if it is idle, else
	// as soon as the call running on it is answered.
	TReclaim = "reclaim"
	// TOK {co, id, r, logs}, TErr {co, id, e, logs} and TStatus {id, status} are replies too.
	// A one-shot checkout request (once) is not granted: its answer is the call's ok,
	// err or lost, addressed to the request by its id, without co; unless it asked for a
	// warm lease and got one (granted with direct and warm).
)

// Error codes carried by "refused", "fail" and "lost". Clients map them to typed errors.
const (
	CodeUnknownInterface = "unknown_interface"
	CodeOverloaded       = "overloaded"
	CodeUnavailable      = "unavailable"
	CodeShuttingDown     = "shutting_down"
	CodeAborted          = "aborted"
	CodeWorkerLost       = "worker_lost"
	CodeCallTimeout      = "call_timeout"
	CodeProtocol         = "protocol_error"
	CodeAbandoned        = "abandoned"
	CodeUnknownCheckout  = "unknown_checkout"
	CodeRemoved          = "interface_removed" // the interface was removed by a reload
	CodeInvalidConfig    = "invalid_config"    // a reload was refused: the config file is not valid; nothing changed
	CodeInvalidUTF8      = "invalid_utf8"      // a call or checkout request was not valid UTF-8: refused, not run
	// CodeForbidden: the interface's allow list does not name the peer (checkouts, and
	// logs of the interface).
	CodeForbidden = "forbidden"
)

// Codes of the fatal message that refuses or ends a connection (docs/security.md).
const (
	CodeTooManyClients = "too_many_clients" // max_clients connections are open: this one is refused
	CodeHelloTimeout   = "hello_timeout"    // the connection sent no request within hello_timeout
)

// Error codes of admin requests (and of the checkouts of a drained interface).
const (
	CodeDraining       = "interface_draining" // an admin drained the interface: no new checkouts until it is resumed
	CodeNotPermitted   = "not_permitted"      // an admin request (or reload) from a peer that is not root or taskd's own user
	CodeUnknownWorker  = "unknown_worker"     // an admin request named no worker of the daemon's
	CodeInvalidRequest = "invalid_request"    // a request of an unknown type, an admin request with an unknown op, or values that are not valid
)

// Admin operations (ClientMsg.Op of an "admin" request).
const (
	OpDrain  = "drain"  // {iface}: refuse new checkouts of the interface; held ones finish
	OpResume = "resume" // {iface}: undo drain
	OpRetire = "retire" // {worker}: retire the worker (id or pid) when its checkout ends, or now if idle
	OpKill   = "kill"   // {worker}: kill the worker now
	OpScale  = "scale"  // {iface, min_idle, max_workers}: resize the pool until the next reload
)

// ClientMsg is one message of the client protocol, in either direction. Payload fields stay
// raw JSON so that taskd relays them without decoding.
type ClientMsg struct {
	T      string          `json:"t"`
	ID     uint64          `json:"id,omitempty"` // request id, or call id within a checkout
	Co     uint64          `json:"co,omitempty"` // checkout id, chosen by taskd
	Iface  string          `json:"iface,omitempty"`
	M      string          `json:"m,omitempty"`
	A      json.RawMessage `json:"a,omitempty"`
	R      json.RawMessage `json:"r,omitempty"`
	E      json.RawMessage `json:"e,omitempty"`
	Logs   json.RawMessage `json:"logs,omitempty"`
	Code   string          `json:"code,omitempty"`
	Msg    string          `json:"msg,omitempty"`
	Worker string          `json:"worker,omitempty"`
	PID    int             `json:"pid,omitempty"`
	N      int             `json:"n,omitempty"` // on granted: checkouts the worker has served, this one included
	// Max, on a checkout, asks taskd to retire the worker when this checkout ends if the
	// worker has then served Max checkouts (the client's MaxCheckouts; 0: no limit).
	Max int `json:"max,omitempty"`
	// Ep, on a call, is how many "err" replies of its checkout the application had been
	// given when it made the call. taskd does not run a call whose Ep is behind the
	// checkout's error count: it was made before the caller knew of an error (aborted).
	Ep   uint64 `json:"ep,omitempty"`
	Keep bool   `json:"keep,omitempty"`
	// Once, on a checkout, makes it one-shot: the request carries the call (M, A); taskd
	// runs it on the worker it would have granted and answers the request with the call's
	// ok, err or lost ({id} of the request, no co), then ends the checkout itself. No
	// granted is sent and no release is needed.
	Once bool `json:"once,omitempty"`
	// Direct, on a checkout (over a unix socket), asks for a direct lease when the worker
	// supports one; on granted, says that the grant is one: the line carries the client's
	// end of a socketpair to the worker (SCM_RIGHTS), on which the client speaks worker
	// protocol v1 itself (docs/worker-protocol.md, "Direct leases").
	Direct bool `json:"direct,omitempty"`
	// Warm, on a one-shot checkout (with direct), asks for a warm lease instead of the
	// call's answer, if the checkout can be direct: taskd then grants it (direct and warm)
	// without running the call, and the client makes its one-shot calls on the lease
	// itself, keeping it between them until it releases it or taskd reclaims it
	// (docs/client-protocol.md, "Warm leases"). Otherwise the one-shot runs as usual.
	Warm bool `json:"warm,omitempty"`
	// Retire, on a release, asks taskd to retire the worker instead of pooling it.
	Retire bool `json:"retire,omitempty"`
	// Draining, on granted and pong, says that taskd is shutting down (SIGTERM): it
	// refuses new checkouts from now on, and a client of several daemons sends its new
	// checkouts elsewhere (docs/client-protocol.md, "Draining").
	Draining bool `json:"draining,omitempty"`
	// Spare, on granted and on a one-shot answer, is the interface's spare workers just
	// after the grant: idle workers less the checkouts still waiting for one (negative
	// when a queue waits; absent when 0). A client of several daemons weighs its choice
	// of daemon by it (docs/client-protocol.md, "Spare workers").
	Spare   int           `json:"spare,omitempty"`
	Version string        `json:"version,omitempty"`
	Status  *Status       `json:"status,omitempty"`
	Reload  *ReloadReport `json:"reload,omitempty"`
	// Follow, on a logs request, asks for the lines that come after the backlog too, in
	// more logs messages, until the client sends abandon {id} or disconnects.
	Follow bool `json:"follow,omitempty"`
	// Lines, on a logs answer, are stderr lines, oldest first.
	Lines []LogLine `json:"lines,omitempty"`
	// Dropped, on a followed logs answer, counts the lines dropped just before Lines
	// because the client did not read fast enough.
	Dropped uint64 `json:"dropped,omitempty"`

	// Op, MinIdle and MaxWorkers are an admin request's (TAdmin): the operation (one of
	// the Op* constants), and a scale's new pool size.
	Op         string `json:"op,omitempty"`
	MinIdle    int    `json:"min_idle,omitempty"`
	MaxWorkers int    `json:"max_workers,omitempty"`

	// Name, on a hello, is the name the client gives itself.
	Name string `json:"name,omitempty"`
	// Checkouts, on a checkouts answer, lists the checkouts held.
	Checkouts []CheckoutInfo `json:"checkouts,omitempty"`
}

// DecodeClientMsg decodes one line of the client protocol and checks the fields its type
// requires. Like DecodeWorkerMsg it returns ErrNotObject or a *ProtocolError, accepts
// unknown types and fields, and leaves payloads (A, R, E, Logs) aliasing line.
//
// A line that is a JSON object but not valid UTF-8 gives an error matching
// ErrInvalidUTF8, with the message decoded as well as it can be (the invalid bytes
// replaced by U+FFFD, as encoding/json does) so that the caller can tell which request
// to refuse; its payloads must not be relayed.
func DecodeClientMsg(line []byte) (ClientMsg, error) {
	var fbuf [12]field
	fields, ok := scanObject(line, fbuf[:0])
	if !ok {
		if notUTF8(line) {
			m, err := DecodeClientMsg(bytes.ToValidUTF8(line, []byte("\uFFFD")))
			if err == nil {
				err = invalidUTF8(line)
			}
			return m, err
		}
		return ClientMsg{}, ErrNotObject
	}
	var m ClientMsg
	for _, f := range fields {
		var err error
		switch string(fieldName(f.key)) {
		case "t":
			m.T, _, err = decodeString(f.val)
		case "id":
			m.ID, _, err = decodeUint(f.val)
		case "co":
			m.Co, _, err = decodeUint(f.val)
		case "ep":
			m.Ep, _, err = decodeUint(f.val)
		case "iface":
			m.Iface, _, err = decodeName(f.val)
		case "m":
			m.M, _, err = decodeName(f.val)
		case "code":
			m.Code, _, err = decodeString(f.val)
		case "msg":
			m.Msg, _, err = decodeString(f.val)
		case "worker":
			m.Worker, _, err = decodeName(f.val)
		case "version":
			m.Version, _, err = decodeString(f.val)
		case "op":
			m.Op, _, err = decodeName(f.val)
		case "min_idle":
			m.MinIdle, _, err = decodeInt(f.val)
		case "max_workers":
			m.MaxWorkers, _, err = decodeInt(f.val)
		case "name":
			m.Name, _, err = decodeString(f.val)
		case "pid":
			m.PID, _, err = decodeInt(f.val)
		case "n":
			m.N, _, err = decodeInt(f.val)
		case "max":
			m.Max, _, err = decodeInt(f.val)
		case "keep":
			m.Keep, err = decodeBool(f.val)
		case "once":
			m.Once, err = decodeBool(f.val)
		case "direct":
			m.Direct, err = decodeBool(f.val)
		case "warm":
			m.Warm, err = decodeBool(f.val)
		case "retire":
			m.Retire, err = decodeBool(f.val)
		case "draining":
			m.Draining, err = decodeBool(f.val)
		case "spare":
			m.Spare, _, err = decodeInt(f.val)
		case "a":
			m.A = f.val
		case "r":
			m.R = f.val
		case "e":
			m.E = f.val
		case "logs":
			m.Logs = f.val
		case "status":
			m.Status = nil
			if string(f.val) != "null" {
				m.Status = new(Status)
				err = json.Unmarshal(f.val, m.Status)
			}
		case "follow":
			m.Follow, err = decodeBool(f.val)
		case "dropped":
			m.Dropped, _, err = decodeUint(f.val)
		case "lines":
			m.Lines, err = decodeLogLines(f.val)
		case "reload":
			m.Reload = nil
			if string(f.val) != "null" {
				m.Reload = new(ReloadReport)
				err = json.Unmarshal(f.val, m.Reload)
			}
		case "checkouts":
			m.Checkouts = nil
			if string(f.val) != "null" {
				var list []CheckoutInfo // not &m.Checkouts: m would escape, on every decode
				err = json.Unmarshal(f.val, &list)
				m.Checkouts = list
			}
		}
		if err != nil {
			return ClientMsg{}, NewProtocolError(line, "field %s: %v", unquoteKey(f.key), err)
		}
	}
	return m, checkClientMsg(line, &m)
}

// checkClientMsg checks the fields that m's type requires.
func checkClientMsg(line []byte, m *ClientMsg) error {
	need := func(ok bool, what string) error {
		if ok {
			return nil
		}
		return NewProtocolError(line, "%q without %s", m.T, what)
	}
	var err error
	switch m.T {
	case "":
		err = NewProtocolError(line, `object without "t"`)
	case TCheckout:
		if err = need(m.ID != 0, `"id"`); err == nil {
			err = need(m.Iface != "", `"iface"`)
		}
		if err == nil && m.Once {
			err = callArgs(line, &m.A)
		}
	case TAbandon, TPing, TStatus, TPong, TReload, TLogs, TAdminOK, TCheckouts:
		err = need(m.ID != 0, `"id"`)
	case TAdmin:
		err = need(m.ID != 0 && m.Op != "", `"id" and "op"`)
	case TRelease, TAbort, TReclaim:
		err = need(m.Co != 0, `"co"`)
	case TLost: // a checkout's, or a one-shot request's
		err = need(m.Co != 0 || m.ID != 0, `"co" or "id"`)
	case TCall, TCancel, TFail:
		err = need(m.Co != 0 && m.ID != 0, `"co" and "id"`)
	case TOK, TErr: // {co, id} answers a call; {id} alone a one-shot request
		err = need(m.ID != 0, `"id"`)
	case TGranted:
		err = need(m.ID != 0 && m.Co != 0, `"id" and "co"`)
	case TRefused:
		err = need(m.ID != 0 && m.Code != "", `"id" and "code"`)
	case TReloaded:
		err = need(m.ID != 0 && m.Reload != nil, `"id" and "reload"`)
	}
	if err != nil {
		return err
	}
	return checkPayloads(line, m.T, &m.A, &m.R, m.E, m.Logs)
}

// appendMarshalled encodes m (a status or reload report) with encoding/json.
func appendMarshalled(buf []byte, m ClientMsg) ([]byte, error) {
	b, err := json.Marshal(&m)
	if err != nil {
		return buf, err
	}
	buf = append(buf, b...)
	return append(buf, '\n'), nil
}

// AppendClientMsg appends m as one line (JSON plus "\n") to buf. Payload fields are
// appended as they are: they must be valid JSON (as the decoders and encoding/json
// produce). Calls and replies are written by AppendCall, AppendOK and AppendErr, the
// encoders the worker protocol shares, so only the fields those messages have are
// written for them (a one-shot answer, which also names its worker, is written field by
// field). Only status, reload and checkouts reports go through encoding/json.
func AppendClientMsg(buf []byte, m *ClientMsg) ([]byte, error) {
	switch {
	case m.Status != nil || m.Reload != nil || m.T == TLogs || m.Checkouts != nil:
		return appendMarshalled(buf, *m) // a copy: m itself does not escape to the heap
	case m.T == TCall:
		return AppendCall(buf, m.Co, m.ID, m.Ep, m.M, m.A), nil
	case m.T == TOK && m.Worker == "": // a one-shot answer also names the worker: below
		return AppendOK(buf, m.Co, m.ID, m.R, m.Logs), nil
	case m.T == TErr && m.Worker == "":
		return AppendErr(buf, m.Co, m.ID, m.E, m.Logs), nil
	}
	buf = append(buf, `{"t":`...)
	buf = AppendString(buf, m.T)
	buf = appendUintField(buf, `,"id":`, m.ID)
	buf = appendUintField(buf, `,"co":`, m.Co)
	buf = appendStringField(buf, `,"iface":`, m.Iface)
	buf = appendStringField(buf, `,"m":`, m.M)
	buf = appendRawField(buf, `,"a":`, m.A)
	buf = appendRawField(buf, `,"r":`, m.R)
	buf = appendRawField(buf, `,"e":`, m.E)
	buf = appendRawField(buf, `,"logs":`, m.Logs)
	buf = appendStringField(buf, `,"code":`, m.Code)
	buf = appendStringField(buf, `,"msg":`, m.Msg)
	buf = appendStringField(buf, `,"worker":`, m.Worker)
	if m.PID != 0 {
		buf = strconv.AppendInt(append(buf, `,"pid":`...), int64(m.PID), 10)
	}
	if m.N != 0 {
		buf = strconv.AppendInt(append(buf, `,"n":`...), int64(m.N), 10)
	}
	if m.Max != 0 {
		buf = strconv.AppendInt(append(buf, `,"max":`...), int64(m.Max), 10)
	}
	if m.Keep {
		buf = append(buf, `,"keep":true`...)
	}
	if m.Once {
		buf = append(buf, `,"once":true`...)
	}
	if m.Direct {
		buf = append(buf, `,"direct":true`...)
	}
	if m.Warm {
		buf = append(buf, `,"warm":true`...)
	}
	if m.Retire {
		buf = append(buf, `,"retire":true`...)
	}
	if m.Draining {
		buf = append(buf, `,"draining":true`...)
	}
	if m.Spare != 0 {
		buf = strconv.AppendInt(append(buf, `,"spare":`...), int64(m.Spare), 10)
	}
	buf = appendStringField(buf, `,"version":`, m.Version)
	buf = appendUintField(buf, `,"ep":`, m.Ep)
	buf = appendStringField(buf, `,"op":`, m.Op)
	if m.MinIdle != 0 {
		buf = strconv.AppendInt(append(buf, `,"min_idle":`...), int64(m.MinIdle), 10)
	}
	if m.MaxWorkers != 0 {
		buf = strconv.AppendInt(append(buf, `,"max_workers":`...), int64(m.MaxWorkers), 10)
	}
	buf = appendStringField(buf, `,"name":`, m.Name)
	return append(buf, "}\n"...), nil
}

func appendUintField(buf []byte, key string, v uint64) []byte {
	if v == 0 {
		return buf
	}
	return strconv.AppendUint(append(buf, key...), v, 10)
}

func appendStringField(buf []byte, key, v string) []byte {
	if v == "" {
		return buf
	}
	return AppendString(append(buf, key...), v)
}

func appendRawField(buf []byte, key string, v json.RawMessage) []byte {
	if len(v) == 0 {
		return buf
	}
	buf = append(buf, key...)
	if bytes.IndexByte(v, '\n') >= 0 || bytes.IndexByte(v, '\r') >= 0 {
		// Built by hand (decoded payloads are one line already): keep the message on one line.
		var c bytes.Buffer
		if json.Compact(&c, v) == nil {
			return append(buf, c.Bytes()...)
		}
	}
	return append(buf, v...)
}
