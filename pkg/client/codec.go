package client

import (
	"encoding/json"
	"strconv"
	"sync"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Encoding of arguments and the life of result buffers: the client's own CPU per call.
//
// Arguments are appended straight into a pooled buffer, strings, booleans, integers and
// raw JSON by hand (the common cases), anything else by encoding/json; the buffer goes
// back to the pool once the send queue has copied the call. Results are copied out of the
// reader's buffer into a pooled buffer, which Checkout.Call and Client.Call give back once
// the result is decoded (Pending.Wait cannot: it may be called again). For a 4 KiB
// argument and result this saves two allocations of the payload's size and
// encoding/json's reflection per call (BenchmarkEncodeArgs compares it with
// json.Marshal).

// maxPooled bounds the buffers kept for reuse: a rare huge payload is left to the GC.
const maxPooled = 64 << 10

var bufs = sync.Pool{New: func() any { return new([]byte) }}

// getBuf returns an empty pooled buffer; give it back with putBuf.
func getBuf() *[]byte { return bufs.Get().(*[]byte) }

// putBuf gives b, holding data, back to the pool.
func putBuf(bp *[]byte, b []byte) {
	if cap(b) > maxPooled {
		return
	}
	*bp = b[:0]
	bufs.Put(bp)
}

// appendArgs appends args as a JSON array to buf. The result decodes as json.Marshal's
// does (strings are not HTML-escaped, which JSON does not need).
func appendArgs(buf []byte, args []any) ([]byte, error) {
	buf = append(buf, '[')
	for i, a := range args {
		if i > 0 {
			buf = append(buf, ',')
		}
		switch v := a.(type) {
		case string:
			buf = wire.AppendString(buf, v)
		case bool:
			buf = strconv.AppendBool(buf, v)
		case int:
			buf = strconv.AppendInt(buf, int64(v), 10)
		case int64:
			buf = strconv.AppendInt(buf, v, 10)
		case nil:
			buf = append(buf, "null"...)
		default:
			b, err := json.Marshal(v) // validates and compacts json.RawMessage too
			if err != nil {
				return buf, err
			}
			buf = append(buf, b...)
		}
	}
	return append(buf, ']'), nil
}

// copyResult copies a result out of the reader's buffer into a pooled buffer; rp is what
// recycleResult needs to give it back.
func copyResult(r json.RawMessage) (json.RawMessage, *[]byte) {
	if len(r) == 0 {
		return nil, nil
	}
	bp := getBuf()
	return append(*bp, r...), bp
}

// recycleResult gives a result's buffer back once nothing refers to it.
func recycleResult(r json.RawMessage, rp *[]byte) {
	if rp != nil {
		putBuf(rp, r)
	}
}
