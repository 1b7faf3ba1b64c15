package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// stream is one source of calls and the place their replies go: stdin and stdout, or a
// direct lease's socket. Its runner goroutine reads, runs and answers the stream's
// messages one at a time, with no hand-off while nothing else is pending. While a call
// runs, nobody reads, unless the supervisor sees the same call running on two of its ticks:
// it then hands the reader role to a watcher goroutine, which handles cancels (and EOF) at
// once and queues calls and dones for the runner, and hands the role back as soon as the
// runner is free again.
//
// The reader role (lr) belongs to whoever mu's owner field names. line, val, enc and errs
// belong to the runner. mu guards the fields below it; nothing slow happens while it is held.
type stream struct {
	s     *server
	lease uint64 // the lease number L, 0 for stdin
	in    io.Reader
	out   io.Writer
	lr    *wire.LineReader

	line []byte        // the reply being written
	val  bytes.Buffer  // the reply's payloads, encoded by enc
	enc  *json.Encoder // writes into val
	errs uint64        // err replies since the last done: the ep rule

	wake chan struct{} // capacity 1: the watcher queued something, gave the role back, or the input ended

	mu        sync.Mutex
	owner     int                 // who holds the reader role: byRunner or byWatcher
	queue     []wire.WorkerMsg    // read by a watcher, not yet started, in order
	cancelled map[uint64]struct{} // queued calls cancelled before they started
	busy      bool                // a call or done is being run by the runner
	curID     uint64              // the call being run, 0 if none
	runCancel context.CancelFunc  // cancels curID's context
	ended     bool                // the input ended; readErr says why (nil: EOF)
	readErr   error
	stopped   bool          // a lease's end: read nothing more
	watcher   chan struct{} // closed when the last watcher started has returned; nil if none

	goexited *running // set by protect when a Func called runtime.Goexit (runner only)
	slot     running  // the run in progress (runner only): reused, one run at a time
}

const (
	byRunner = iota
	byWatcher
)

func (s *server) newStream(lease uint64, in io.Reader, out io.Writer) *stream {
	st := &stream{
		s:         s,
		lease:     lease,
		in:        in,
		out:       out,
		lr:        wire.NewLineReader(in, s.max),
		wake:      make(chan struct{}, 1),
		cancelled: make(map[uint64]struct{}),
	}
	st.enc = json.NewEncoder(&st.val)
	st.enc.SetEscapeHTML(false)
	return st
}

func (st *stream) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// read reads lines until a call or a done, handling cancels on the way. It returns io.EOF
// when the input ends and a descriptive error when it fails.
func (st *stream) read() (wire.WorkerMsg, error) {
	for {
		line, err := st.lr.ReadLine()
		switch {
		case errors.Is(err, io.EOF):
			return wire.WorkerMsg{}, io.EOF
		case errors.Is(err, wire.ErrLineTooLong):
			return wire.WorkerMsg{}, fmt.Errorf("worker: %s sent %w; TASKD_MAX_MESSAGE_BYTES must match taskd's max_message_bytes", st.peer(), err)
		case err != nil:
			return wire.WorkerMsg{}, fmt.Errorf("worker: reading from %s: %w", st.peer(), err)
		}
		m, err := wire.DecodeWorkerMsg(line)
		if err != nil {
			st.s.log.Warn("worker: ignoring a malformed line from "+st.peer(), zap.Error(err))
			continue
		}
		switch m.T {
		case wire.TCall, wire.TDone:
			return m, nil
		case wire.TCancel:
			st.cancel(m.ID)
		}
	}
}

func (st *stream) peer() string {
	if st.lease == 0 {
		return "taskd"
	}
	return fmt.Sprintf("the client of lease %d", st.lease)
}

// inputEnded records why the input ended and tells the server.
func (st *stream) inputEnded(err error) {
	st.mu.Lock()
	st.ended = true
	if err != io.EOF {
		st.readErr = err
	}
	st.mu.Unlock()
	st.signal()
	st.s.inputEnded(st)
}

// cancel cancels the running call id, or marks it if it is queued. Safe for concurrent use.
func (st *stream) cancel(id uint64) {
	var cancel context.CancelFunc
	st.mu.Lock()
	if st.curID == id {
		cancel = st.runCancel
	} else {
		for _, m := range st.queue {
			if m.T == wire.TCall && m.ID == id {
				st.cancelled[id] = struct{}{}
				break
			}
		}
	}
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// next returns the next message to run and marks the stream busy with it, or false once
// the input has ended (or the lease was stopped) and nothing is queued.
func (st *stream) next() (wire.WorkerMsg, context.Context, bool) {
	for {
		st.mu.Lock()
		if len(st.queue) > 0 {
			m := st.queue[0]
			st.queue[0] = wire.WorkerMsg{}
			st.queue = st.queue[1:]
			ctx := st.begin(m)
			st.mu.Unlock()
			return m, ctx, true
		}
		if st.ended || st.stopped { // a lease's end: what was read is answered, no more is read
			st.mu.Unlock()
			return wire.WorkerMsg{}, nil, false
		}
		if st.owner == byWatcher {
			st.mu.Unlock()
			<-st.wake
			continue
		}
		st.mu.Unlock()
		// The fast path: this goroutine holds the reader role and nothing is queued.
		m, err := st.read()
		if err != nil {
			st.inputEnded(err)
			return wire.WorkerMsg{}, nil, false
		}
		st.mu.Lock()
		ctx := st.begin(m)
		st.mu.Unlock()
		return m, ctx, true
	}
}

// begin marks the stream busy with m, under mu; for a call it returns the call's context,
// already cancelled if the call was cancelled while queued (as the Python and Perl SDKs
// run it with cancelled() already true).
func (st *stream) begin(m wire.WorkerMsg) context.Context {
	st.busy = true
	if m.T != wire.TCall {
		return nil
	}
	// The parent cannot be cancelled, so that no registration with it is needed; the
	// server cancels the running call itself when the input closes (cancelCalls).
	ctx, cancel := context.WithCancel(st.s.callParent)
	st.curID, st.runCancel = m.ID, cancel
	if _, ok := st.cancelled[m.ID]; ok {
		delete(st.cancelled, m.ID)
		cancel()
	} else if st.s.callsCancelled.Load() {
		cancel()
	}
	return ctx
}

// cancelRunning cancels the call running now, if any.
func (st *stream) cancelRunning() {
	st.mu.Lock()
	cancel := st.runCancel
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// idle marks the stream no longer busy: a cancel from now on finds nothing to do.
func (st *stream) idle() {
	st.mu.Lock()
	cancel := st.runCancel
	st.busy, st.curID, st.runCancel = false, 0, nil
	st.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// watch is the watcher goroutine: it holds the reader role while the runner is busy.
func (st *stream) watch(done chan struct{}) {
	defer close(done)
	for {
		m, err := st.read()
		if err != nil {
			st.inputEnded(err)
			return
		}
		m.A = bytes.Clone(m.A) // m aliases the reader's buffer; copied before locking
		st.mu.Lock()
		st.queue = append(st.queue, m)
		back := !st.busy
		if back {
			st.owner = byRunner
		}
		st.mu.Unlock()
		st.signal()
		if back {
			return
		}
	}
}

// takeover gives the reader role to a new watcher if the runner still holds it while busy.
// The supervisor calls it.
func (st *stream) takeover() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.busy || st.owner != byRunner || st.ended || st.stopped {
		return
	}
	st.owner = byWatcher
	st.watcher = make(chan struct{})
	go st.watch(st.watcher)
}

// running is what the runner needs to finish a call or done, also after runtime.Goexit
// ended the goroutine that started it.
type running struct {
	m    wire.WorkerMsg
	c    *Call // nil for a done
	ctx  context.Context
	goex bool // the Func called runtime.Goexit
}

// run is the runner's loop; it returns when the input has ended and everything read is
// answered (nil, or the read error), or on a write or CheckoutDone error.
func (st *stream) run() error {
	for {
		m, ctx, ok := st.next()
		if !ok {
			st.mu.Lock()
			defer st.mu.Unlock()
			return st.readErr
		}
		r := &st.slot
		*r = running{m: m, ctx: ctx}
		var err error
		if m.T == wire.TCall {
			err = st.call(r)
		} else {
			err = st.checkoutDone(r)
		}
		if err != nil {
			return err
		}
	}
}

// loop runs run in this goroutine and sends its result to done. If a Func ends the
// goroutine with runtime.Goexit, a new goroutine answers that call and carries on.
func (st *stream) loop(resume *running, done chan<- error) {
	defer func() {
		if r := st.goexited; r != nil {
			st.goexited = nil
			go st.loop(r, done)
		}
	}()
	var err error
	if resume != nil {
		if resume.c != nil {
			err = st.finishCall(resume, nil, &Error{Type: "panic", Msg: "the function called runtime.Goexit instead of returning"})
		} else {
			err = st.finishDone(&Error{Type: "panic", Msg: "CheckoutDone called runtime.Goexit instead of returning"})
		}
	}
	if err == nil {
		err = st.run()
	}
	done <- err
}

var errReplyTooLarge = errors.New("reply too large")

// call answers one call: "aborted" if the ep rule says it is queued behind an error, an
// UnknownMethod error if nothing handles it, else the Func's result.
func (st *stream) call(r *running) error {
	s, m := st.s, r.m
	f := s.spec.Default
	if m.M != "" {
		f = s.spec.Methods[m.M]
	}
	if m.HasEp && m.Ep < st.errs {
		// Made before the application had seen an error this checkout raised: not run.
		st.idle()
		st.line = wire.AppendAborted(st.line[:0], m.ID)
		return st.flush()
	}
	// The arguments are copied: while the call runs, a watcher may reuse the read buffer.
	r.c = &Call{Method: m.M, Log: s.calls, args: bytes.Clone(m.A)}
	if f == nil {
		st.idle()
		st.reply(m.ID, r.c, nil, s.unknown(m.M), nil)
		return st.flush()
	}
	s.execMu.Lock() // unlocked by finishCall
	s.started(st, m.ID, m.M)
	s.rec.start()
	res, err := st.protect(r, func() (any, error) { return f(r.ctx, r.c) })
	return st.finishCall(r, res, err)
}

func (st *stream) finishCall(r *running, res any, err error) error {
	s := st.s
	logs := s.rec.stop()
	st.idle()
	isErr := st.reply(r.m.ID, r.c, res, err, logs)
	s.ended(true, isErr)
	s.execMu.Unlock()
	return st.flush()
}

// protect runs f, turning a panic into an *Error of type "panic" whose trace is the
// stack. If f calls runtime.Goexit, protect records r for loop to finish the call in a
// new goroutine; the deferred calls of the caller then run and the goroutine ends.
func (st *stream) protect(r *running, f func() (any, error)) (res any, err error) {
	returned := false
	defer func() {
		if returned {
			return
		}
		if v := recover(); v != nil {
			msg := fmt.Sprint(v)
			if e, ok := v.(error); ok {
				msg = e.Error()
			}
			res, err = nil, &Error{Type: "panic", Msg: msg, Trace: string(debug.Stack())}
			return
		}
		st.goexited = r
	}()
	res, err = f()
	returned = true
	return res, err
}

func (st *stream) checkoutDone(r *running) error {
	s := st.s
	st.errs = 0 // a new checkout starts with no errors
	if s.spec.CheckoutDone == nil {
		st.idle()
		return nil
	}
	s.execMu.Lock() // unlocked by finishDone
	s.started(st, 0, "")
	_, err := st.protect(r, func() (any, error) { return nil, s.spec.CheckoutDone(s.ctx) })
	return st.finishDone(err)
}

func (st *stream) finishDone(err error) error {
	s := st.s
	st.idle()
	s.ended(false, false)
	s.execMu.Unlock()
	if err != nil {
		return st.finishDoneError(err)
	}
	return nil
}

// errDoneFailed is the start of the error serve returns when CheckoutDone fails.
var errDoneFailed = errors.New("worker: CheckoutDone failed, exiting so that this worker serves no further checkout")

func errCheckoutDone(err error) error { return fmt.Errorf("%w: %w", errDoneFailed, err) }

// reply builds in line the reply to call id, preceded by a "bye" line if c asked for one
// (on a lease, bye goes to taskd on the control socket instead), and reports whether it is
// an "err" reply.
func (st *stream) reply(id uint64, c *Call, res any, err error, logs []wire.LogRecord) bool {
	st.line = st.line[:0]
	if bye, msg := c.byeRequest(); bye {
		if st.lease == 0 {
			st.line = wire.AppendBye(st.line, msg)
		} else {
			st.s.sendControl(wire.AppendBye(nil, msg))
		}
	}
	start := len(st.line)
	st.val.Reset()
	if err == nil {
		if eerr := st.encode(res); eerr != nil {
			err = fmt.Errorf("%s returned a result that cannot be encoded as JSON: %w", c.what(), eerr)
		}
	}
	if err != nil {
		st.encode(errorPayload(err))
	}
	n := st.val.Len()
	if len(logs) > 0 {
		st.encode(logs)
	}
	payload, encLogs := st.val.Bytes()[:n], st.val.Bytes()[n:]
	if err == nil {
		st.line = wire.AppendOK(st.line, 0, id, payload, encLogs)
	} else {
		st.line = wire.AppendErr(st.line, 0, id, payload, encLogs)
	}
	if size := len(st.line) - start - 1; size > st.s.max {
		err = errReplyTooLarge
		st.val.Reset()
		st.encode(wire.ErrorPayload{
			Type: "ReplyTooLarge",
			Msg:  fmt.Sprintf("the reply of %s is %d bytes, more than max_message_bytes (%d): return less, or raise max_message_bytes", c.what(), size, st.s.max),
		})
		st.line = wire.AppendErr(st.line[:start], 0, id, st.val.Bytes(), nil)
	}
	if err != nil {
		st.errs++ // an err reply: calls made before the application saw it are not run
	}
	return err != nil
}

// flush writes line with a single Write. A lease whose client went away loses the reply
// silently (taskd ends the lease); stdout failing ends serve.
func (st *stream) flush() error {
	s := st.s
	s.wmu.Lock()
	if s.abandoned {
		s.wmu.Unlock()
		return errExit
	}
	_, err := st.out.Write(st.line)
	s.wmu.Unlock()
	if err == nil {
		return nil
	}
	if st.lease != 0 {
		s.log.Debug("worker: a lease's client went away before its reply", zap.Uint64("lease", st.lease), zap.Error(err))
		return nil
	}
	if s.closing() {
		return errExit // taskd closed stdin and stopped reading: nothing to report
	}
	return fmt.Errorf("worker: writing to taskd: %w", err)
}

// encode appends v to val as JSON without a trailing newline. On error val is unchanged.
func (st *stream) encode(v any) error {
	if err := st.enc.Encode(v); err != nil {
		return err
	}
	st.val.Truncate(st.val.Len() - 1) // Encode's newline
	return nil
}
