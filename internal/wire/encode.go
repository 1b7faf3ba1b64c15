package wire

import (
	"encoding/json"
	"strconv"
)

// The encoders of the messages that more than one program writes. Each message has one
// encoder, used by taskd, pkg/client and pkg/worker alike: the worker protocol's call and
// replies are the client protocol's without "co". AppendClientMsg writes calls and replies
// with these too. Every encoder appends exactly one line, "\n" included: a payload that
// holds a line break (a "\r" is JSON white space within a line; encoding/json writes
// none) is compacted first, and only then does an encoder allocate beyond growing buf.

// NoEp, as AppendCall's ep, leaves the "ep" field out: taskd sends a call's ep only to a
// worker that announced pipelining (a call without ep is always run), while a client puts
// it on every call.
const NoEp = ^uint64(0)

// AppendCall appends a call to buf:
//
//	{"t":"call","co":CO,"id":ID,"m":METHOD,"ep":EP,"a":ARGS}
//
// co is the checkout of the client protocol; 0 leaves it out, as the worker protocol has
// none. An empty method (a function-style call) is left out, and so is ep when it is NoEp.
// args must be a JSON array (nil means []); one that spans lines is compacted.
func AppendCall(buf []byte, co, id, ep uint64, method string, args json.RawMessage) []byte {
	buf = append(buf, `{"t":"call"`...)
	buf = appendUintField(buf, `,"co":`, co)
	buf = strconv.AppendUint(append(buf, `,"id":`...), id, 10)
	buf = appendStringField(buf, `,"m":`, method)
	if ep != NoEp {
		buf = strconv.AppendUint(append(buf, `,"ep":`...), ep, 10)
	}
	if len(args) == 0 {
		args = json.RawMessage("[]")
	}
	buf = appendRawField(buf, `,"a":`, args)
	return append(buf, "}\n"...)
}

// AppendOK appends a success reply to buf:
//
//	{"t":"ok","co":CO,"id":ID,"r":R,"logs":LOGS}
//
// co is left out when 0 (the worker protocol), and so are empty logs; empty r means null.
// r and logs must be valid JSON (logs an array); one that spans lines is compacted.
func AppendOK(buf []byte, co, id uint64, r, logs json.RawMessage) []byte {
	if len(r) == 0 {
		r = json.RawMessage("null")
	}
	return appendReply(buf, `{"t":"ok"`, co, id, `,"r":`, r, logs)
}

// AppendErr appends an error reply to buf:
//
//	{"t":"err","co":CO,"id":ID,"e":E,"logs":LOGS}
//
// like AppendOK. e must be a JSON object (an ErrorPayload); empty e means {}.
func AppendErr(buf []byte, co, id uint64, e, logs json.RawMessage) []byte {
	if len(e) == 0 {
		e = json.RawMessage("{}")
	}
	return appendReply(buf, `{"t":"err"`, co, id, `,"e":`, e, logs)
}

func appendReply(buf []byte, head string, co, id uint64, key string, payload, logs json.RawMessage) []byte {
	buf = append(buf, head...)
	buf = appendUintField(buf, `,"co":`, co)
	buf = strconv.AppendUint(append(buf, `,"id":`...), id, 10)
	buf = appendRawField(buf, key, payload)
	buf = appendRawField(buf, `,"logs":`, logs)
	return append(buf, "}\n"...)
}

// AppendAborted appends the worker protocol's {"t":"aborted","id":ID}: the worker did not
// run call id because of the ep rule.
func AppendAborted(buf []byte, id uint64) []byte {
	buf = strconv.AppendUint(append(buf, `{"t":"aborted","id":`...), id, 10)
	return append(buf, "}\n"...)
}

// AppendCancel appends the worker protocol's {"t":"cancel","id":ID}.
func AppendCancel(buf []byte, id uint64) []byte {
	buf = strconv.AppendUint(append(buf, `{"t":"cancel","id":`...), id, 10)
	return append(buf, "}\n"...)
}

// AppendReady appends the worker protocol's {"t":"ready","v":1}, with "pipeline":true if
// the worker applies the ep rule itself.
func AppendReady(buf []byte, pipeline bool) []byte {
	buf = strconv.AppendInt(append(buf, `{"t":"ready","v":`...), ProtocolVersion, 10)
	if pipeline {
		buf = append(buf, `,"pipeline":true`...)
	}
	return append(buf, "}\n"...)
}

// AppendReadyLease appends the ready line of a worker that also supports version lease of
// the direct-lease extension: {"t":"ready","v":1,"pipeline":true,"lease":N} (lease 0 is
// AppendReady's line).
func AppendReadyLease(buf []byte, pipeline bool, lease int) []byte {
	buf = AppendReady(buf, pipeline)
	if lease <= 0 {
		return buf
	}
	buf = strconv.AppendInt(append(buf[:len(buf)-2], `,"lease":`...), int64(lease), 10)
	return append(buf, "}\n"...)
}

// AppendBye appends the worker protocol's {"t":"bye","msg":MSG}; an empty msg is left out.
func AppendBye(buf []byte, msg string) []byte {
	buf = append(buf, `{"t":"bye"`...)
	buf = appendStringField(buf, `,"msg":`, msg)
	return append(buf, "}\n"...)
}

// DoneLine is the message taskd sends when a checkout is released.
var DoneLine = []byte(`{"t":"done"}` + "\n")
