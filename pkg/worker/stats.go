package worker

import (
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"
)

// The stats page taskd gives a worker that supports leases (docs/worker-protocol.md, "The
// stats page"): 4096 bytes of shared memory, u64 little-endian words, written by the worker
// under a seqlock and read by taskd whenever it likes, so that taskd knows the running call
// of a leased worker without a system call per call on either side.
const (
	statsSize      = 4096
	statsMagic     = 0x7461736b64737431 // "taskdst1"
	maxMethodBytes = 192

	wSeq      = 0 // seqlock: odd while the worker writes
	wMagic    = 1
	wCalls    = 2 // calls started, ever
	wDone     = 3 // calls answered, ever
	wCurID    = 4 // the running call's id; 0: none
	wCurStart = 5 // its start, Unix nanoseconds
	wLease    = 6 // the lease it came from; 0: stdin
	wErrs     = 7 // err replies, ever
	wMlen     = 8 // the length of the method name
	wMethod   = 9 // the method name, 24 words
)

// statsPage is the worker's view of the page. Only the goroutine holding server.execMu
// writes it; every access is atomic, so that taskd (or a test) may read it at any time. A
// nil *statsPage does nothing.
type statsPage struct {
	mem []byte // the mapping, statsSize bytes
	w   *[statsSize / 8]uint64
}

func newStatsPage(mem []byte) *statsPage {
	return &statsPage{mem: mem, w: (*[statsSize / 8]uint64)(unsafe.Pointer(&mem[0]))}
}

func (p *statsPage) init() {
	if p == nil {
		return
	}
	atomic.StoreUint64(&p.w[wMagic], statsMagic)
}

// start publishes that call id of lease (0: stdin) runs method from now.
func (p *statsPage) start(id, lease uint64, method string) {
	if p == nil {
		return
	}
	w := p.w
	if len(method) > maxMethodBytes {
		n := maxMethodBytes
		for n > 0 && !utf8.RuneStart(method[n]) {
			n--
		}
		method = method[:n]
	}
	atomic.AddUint64(&w[wSeq], 1)
	atomic.AddUint64(&w[wCalls], 1)
	atomic.StoreUint64(&w[wCurID], id)
	atomic.StoreUint64(&w[wCurStart], uint64(time.Now().UnixNano()))
	atomic.StoreUint64(&w[wLease], lease)
	atomic.StoreUint64(&w[wMlen], uint64(len(method)))
	for i := 0; i < len(method); i += 8 {
		var v uint64
		for j := 0; j < 8 && i+j < len(method); j++ {
			v |= uint64(method[i+j]) << (8 * j) // little-endian: the bytes in string order
		}
		atomic.StoreUint64(&w[wMethod+i/8], v)
	}
	atomic.AddUint64(&w[wSeq], 1)
}

// end publishes that the running call was answered, with an err reply if isErr.
func (p *statsPage) end(isErr bool) {
	if p == nil {
		return
	}
	w := p.w
	atomic.AddUint64(&w[wSeq], 1)
	atomic.AddUint64(&w[wDone], 1)
	if isErr {
		atomic.AddUint64(&w[wErrs], 1)
	}
	atomic.StoreUint64(&w[wCurID], 0)
	atomic.AddUint64(&w[wSeq], 1)
}
