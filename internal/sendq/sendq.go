// Package sendq is a send queue for one connection or pipe: callers hand it whole
// messages and never block.
//
// Send first tries to write at once, from the caller's goroutine, with a non-blocking
// write; only what the kernel does not take right away is left to the queue's writer
// goroutine, which waits for the descriptor to become writable. The common case — an
// idle descriptor with room in its buffer — costs one write system call and no goroutine
// hand-off. Messages queued while a write is in progress are written together (one
// system call for many messages).
//
// A Queue owns its writer goroutine: Close and Abort stop it, and Done is closed when it
// has returned. All methods are safe for concurrent use.
package sendq

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/taskd-dev/taskd/internal/fdio"
)

// Conn is what a Queue writes to: a pipe (*os.File) or a network connection.
type Conn interface {
	io.Writer
	io.Closer
}

// maxSpare bounds the buffer kept for reuse between writes.
const maxSpare = 1 << 20

// Queue is the send queue of one Conn.
type Queue struct {
	c       Conn
	raw     syscall.RawConn // nil if c has no descriptor: every write goes to the writer
	onError func(error)
	limit   int // most bytes left unwritten; 0: no limit (see WithLimit)

	mu      sync.Mutex
	pending []byte // bytes accepted and not yet written, in order
	spare   []byte
	busy    bool // someone is writing pending's former contents right now
	corked  int  // Cork depth: while > 0, Append leaves messages queued (see Cork)
	// accepted and written count the bytes of the stream so far: taken by Append, and
	// written to c (see Written). idle is signalled when busy becomes false.
	accepted, written uint64
	idle              sync.Cond
	closing           bool // Close: flush, then close c
	closed            bool // no more Sends
	failed            bool // a write failed or Abort was called
	wake              chan struct{}
	done              chan struct{}
	abortAt           *time.Timer // CloseWithin: aborts a flush that takes too long
	rights            []right     // descriptors to send with bytes not yet written (rights.go)

	// State of the one fast-path write under way (busy guards it), kept here so that the
	// callback given to RawConn.Write is made once, not per write.
	twBuf   []byte
	twN     int
	twErr   error
	twWrite func(fd uintptr) bool
}

// ErrBacklog is reported (to onError) when more than the queue's limit is waiting to be
// written: the queue then fails like on a write error, closing c.
var ErrBacklog = errors.New("sendq: backlog over the limit")

// WithLimit bounds what may be queued and not yet written to n bytes (n must exceed the
// largest message): past it the queue fails with ErrBacklog, so that a peer that stops
// reading cannot make it grow without end. Call it before the first Send.
func (q *Queue) WithLimit(n int) *Queue {
	q.mu.Lock()
	q.limit = n
	q.mu.Unlock()
	return q
}

// BacklogFor is the limit to give a queue whose messages are at most maxMessage bytes:
// room for a few of them, and never less than a few of the usual small ones.
func BacklogFor(maxMessage int) int {
	return 4*maxMessage + 64<<10
}

// New returns a queue writing to c and starts its writer goroutine. onError (may be nil)
// is called once, from whichever goroutine saw it, when a write fails; the queue then
// closes c and drops everything queued.
func New(c Conn, onError func(error)) *Queue {
	q := &Queue{c: c, onError: onError, wake: make(chan struct{}, 1), done: make(chan struct{})}
	q.idle.L = &q.mu
	if raw, ok := fdio.Raw(c); ok {
		q.raw = raw
		q.twWrite = q.writeNow
	}
	go q.writer()
	return q
}

// Send queues a copy of msg (one or more whole lines). It returns false if the queue is
// closed, or if msg took it over its limit (the queue has then failed).
func (q *Queue) Send(msg []byte) bool {
	return q.Append(func(b []byte) []byte { return append(b, msg...) })
}

// Append lets fn append a message directly to the queue's buffer, avoiding a copy. fn runs
// with the queue locked: it must only encode. Append returns false if the queue is closed
// (fn is not called) or if the message took it over its limit (the queue has then failed).
func (q *Queue) Append(fn func([]byte) []byte) bool {
	_, ok := q.AppendMark(fn)
	return ok
}

// NeverWritten is the mark AppendMark returns for a message it did not take (the queue
// is closed): Written is false for it.
const NeverWritten = ^uint64(0)

// AppendMark is Append, and also returns the position in the stream just past the
// message, for Written (NeverWritten if the queue is closed).
func (q *Queue) AppendMark(fn func([]byte) []byte) (mark uint64, ok bool) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return NeverWritten, false
	}
	n := len(q.pending)
	q.pending = fn(q.pending)
	q.accepted += uint64(len(q.pending) - n)
	mark = q.accepted
	if q.limit > 0 && len(q.pending) > q.limit {
		q.mu.Unlock()
		q.fail(fmt.Errorf("%w: more than %d bytes queued (the peer is not reading)", ErrBacklog, q.limit))
		return mark, false
	}
	if q.corked > 0 {
		q.mu.Unlock()
		return mark, true // written by the matching Uncork
	}
	q.flushLocked()
	return mark, true
}

// Written reports whether the stream has been written to the Conn up to mark (from
// AppendMark), waiting for a write under way to finish. Once the queue has failed or been
// aborted, false is final: the message did not reach the Conn whole, so a peer cannot
// have acted on it. (True says nothing of whether the peer read it.)
func (q *Queue) Written(mark uint64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.busy {
		q.idle.Wait() // a write never blocks for long once the Conn is closed
	}
	return q.written >= mark
}

// Unwritten returns how many bytes were accepted and are not yet written to the Conn
// (all of them, once the queue has failed). Unlike Written it never waits: a sender of
// its own accord (a log follower) checks it to leave a slow peer's queue short.
func (q *Queue) Unwritten() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.accepted - q.written
}

// Cork holds back the writing of messages appended until the matching Uncork, which
// writes them all at once: one system call, and one wake-up of the peer, for messages
// that belong together (a call and the checkout's done; a grant and its answer). Corks
// nest. The writer goroutine is not held back: if it is writing already, messages may
// still go out in more than one write, in order.
func (q *Queue) Cork() {
	q.mu.Lock()
	q.corked++
	q.mu.Unlock()
}

// Uncork ends a Cork and, at the outermost one, writes what was held back.
func (q *Queue) Uncork() {
	q.mu.Lock()
	q.corked--
	if q.corked > 0 || len(q.pending) == 0 || q.failed {
		q.mu.Unlock()
		return
	}
	q.flushLocked()
}

// flushLocked writes pending now if nobody else is writing, else leaves it to the writer.
// q.mu is held on entry and released on return.
func (q *Queue) flushLocked() {
	if q.busy || q.raw == nil {
		q.mu.Unlock()
		q.kick()
		return
	}
	// Fast path: write now, without waiting.
	q.busy = true
	buf := q.pending
	q.pending = q.spare[:0]
	base := q.written
	rs := q.rightsInLocked(base, len(buf))
	q.mu.Unlock()

	var n, sent int
	var err error
	if rs == nil {
		n, err = q.tryWrite(buf)
	} else {
		n, sent, err = q.writeRights(buf, base, rs, false)
	}

	q.mu.Lock()
	q.sentRightsLocked(sent)
	q.wroteLocked(n)
	if err != nil {
		q.mu.Unlock()
		q.fail(err)
		return
	}
	if n < len(buf) {
		// The rest goes first, before anything queued meanwhile; the writer takes over.
		rest := append(make([]byte, 0, len(buf)-n+len(q.pending)), buf[n:]...)
		q.pending = append(rest, q.pending...)
		q.mu.Unlock()
		q.kick()
		return
	}
	q.recycle(buf)
	more := len(q.pending) > 0 || q.closing // a Close meanwhile: the writer closes c
	q.mu.Unlock()
	if more {
		q.kick()
	}
}

// wroteLocked ends a write (of either writer) that wrote n bytes. q.mu is held.
func (q *Queue) wroteLocked(n int) {
	q.busy = false
	q.written += uint64(n)
	q.idle.Broadcast()
}

// tryWrite writes what the kernel takes at once; EAGAIN is not an error. Only the holder
// of busy calls it.
func (q *Queue) tryWrite(buf []byte) (int, error) {
	q.twBuf, q.twN, q.twErr = buf, 0, nil
	err := q.raw.Write(q.twWrite)
	n, werr := q.twN, q.twErr
	q.twBuf, q.twErr = nil, nil
	if werr == nil {
		werr = err
	}
	return n, werr
}

// writeNow is tryWrite's callback: it writes q.twBuf without waiting for the descriptor.
func (q *Queue) writeNow(fd uintptr) bool {
	for q.twN < len(q.twBuf) {
		m, err := fdio.Write(fd, q.twBuf[q.twN:])
		q.twN += m
		if err != nil {
			if err != syscall.EAGAIN {
				q.twErr = err
			}
			break
		}
	}
	return true // never wait here: the writer goroutine waits
}

func (q *Queue) recycle(buf []byte) {
	if cap(buf) <= maxSpare {
		q.spare = buf[:0]
	}
}

func (q *Queue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// writer writes what the fast path could not, blocking until the descriptor is writable.
func (q *Queue) writer() {
	defer close(q.done)
	defer func() {
		q.mu.Lock()
		if q.abortAt != nil {
			q.abortAt.Stop()
		}
		q.mu.Unlock()
	}()
	for range q.wake {
		q.mu.Lock()
		if q.busy {
			q.mu.Unlock()
			continue // a fast-path write is under way; it kicks us if it leaves a rest
		}
		buf, closing := q.pending, q.closing
		var rs []right
		base := q.written
		if len(buf) > 0 {
			q.busy = true
			q.pending = q.spare[:0]
			rs = q.rightsInLocked(base, len(buf))
		}
		q.mu.Unlock()
		if len(buf) > 0 {
			var n, sent int
			var err error
			if rs == nil {
				n, err = q.c.Write(buf)
			} else {
				n, sent, err = q.writeRights(buf, base, rs, true)
			}
			q.mu.Lock()
			q.sentRightsLocked(sent)
			q.wroteLocked(n)
			if err != nil {
				q.mu.Unlock()
				q.fail(err)
				return
			}
			q.recycle(buf)
			more := len(q.pending) > 0
			q.mu.Unlock()
			if more {
				q.kick()
				continue
			}
		}
		if closing {
			q.mu.Lock()
			flushed := len(q.pending) == 0 && !q.busy
			q.mu.Unlock()
			if flushed {
				q.c.Close()
				return
			}
			q.kick()
		}
	}
}

var errAborted = errors.New("sendq: aborted")

func (q *Queue) fail(err error) {
	q.mu.Lock()
	first := !q.failed
	q.failed, q.closed, q.closing = true, true, true
	q.pending = nil
	q.dropUnsentLocked()
	q.mu.Unlock()
	q.c.Close() // unblocks a writer stuck in Write
	if first && q.onError != nil && !errors.Is(err, errAborted) {
		q.onError(err)
	}
	q.kick()
}

// Close stops accepting messages, writes what is queued, then closes the Conn. It does
// not wait: see Done.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed, q.closing = true, true
	q.mu.Unlock()
	q.kick()
}

// CloseWithin is Close, but gives the flush at most d: then the Conn is closed and what is
// still queued is dropped, as by Abort, so that a peer that does not read cannot hold the
// queue (and whoever waits for Done) for ever.
func (q *Queue) CloseWithin(d time.Duration) {
	q.mu.Lock()
	if q.abortAt == nil {
		q.abortAt = time.AfterFunc(d, q.Abort)
	}
	q.mu.Unlock()
	q.Close()
}

// Abort closes the Conn now, dropping what is queued; a blocked write returns.
func (q *Queue) Abort() {
	q.fail(errAborted)
}

// Done is closed when the writer goroutine has returned (after Close has flushed, or
// after Abort or a write error).
func (q *Queue) Done() <-chan struct{} { return q.done }
