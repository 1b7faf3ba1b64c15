package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// exitGrace is how long serve goes on, after stdin closed, answering the messages it had
// read, with their contexts cancelled.
const exitGrace = time.Second

// server is one run of the protocol. Two goroutines touch it: the reader (started by
// serve, owns the LineReader, only queues and cancels) and the executor (the goroutine
// that called serve: runs calls in order and owns out, line, val and enc). mu guards the
// fields below it and nothing slow happens while it is held.
type server struct {
	spec  Spec
	max   int
	out   io.Writer
	log   *zap.Logger // the SDK's own messages, to stderr
	calls *zap.Logger // handed to calls: stderr plus rec
	rec   *recorder

	line  []byte        // the reply being written, by the wire package's encoders
	val   bytes.Buffer  // the reply's payloads, encoded by enc
	enc   *json.Encoder // writes into val
	grace *time.Timer   // started when the executor first sees that stdin closed

	ctx       context.Context // parent of every call's context; cancelled when stdin closes
	cancelAll context.CancelFunc

	wake    chan struct{} // capacity 1: the queue grew
	stopped chan struct{} // closed when the reader has returned
	readErr error         // the reader's result, set before stopped is closed

	errs uint64 // err replies since the last done (executor only): the ep rule

	mu        sync.Mutex
	queue     []wire.WorkerMsg    // calls and dones not yet started, in order
	cancelled map[uint64]struct{} // calls taskd cancelled before they started
	curID     uint64              // the call taken off the queue, running or about to run; 0 if none
	runCancel context.CancelFunc  // cancels curID's context once it runs
}

// errExit stops the executor without an error of its own: stdin closed and exitGrace
// passed, or taskd stopped reading after closing stdin.
var errExit = errors.New("worker: stdin closed")

// serve runs the protocol: Setup, "ready", then calls read from in until in ends. Replies
// are written to out, one Write per reply; the SDK's log output goes to stderr. Lines
// longer than maxLine bytes on in are fatal. ctx is the parent of the contexts handed to
// Setup, calls and CheckoutDone. serve returns when in has ended and the messages read
// before are answered (nil, or the read error), or on a write, Setup or CheckoutDone
// error, after closing in if it is an io.Closer; always after its reader goroutine has
// returned.
func serve(ctx context.Context, spec Spec, in io.Reader, out io.Writer, stderr io.Writer, maxLine int) error {
	if err := spec.validate(); err != nil {
		return err
	}
	if maxLine <= 0 {
		maxLine = wire.DefaultMaxMessageBytes
	}
	s := &server{
		spec:      spec,
		max:       maxLine,
		out:       out,
		rec:       &recorder{},
		wake:      make(chan struct{}, 1),
		stopped:   make(chan struct{}),
		cancelled: make(map[uint64]struct{}),
	}
	s.log, s.calls = newLoggers(spec.Logger, stderr, s.rec)
	s.enc = json.NewEncoder(&s.val)
	s.enc.SetEscapeHTML(false)
	s.ctx, s.cancelAll = context.WithCancel(ctx)
	defer s.cancelAll()
	defer func() {
		if s.grace != nil {
			s.grace.Stop()
		}
	}()

	if spec.Setup != nil {
		// Before the reader starts, s.stopped stays open: invoke just waits.
		_, err := s.invoke(s.ctx, func(ctx context.Context) (any, error) { return nil, spec.Setup(ctx) })
		if err != nil {
			return fmt.Errorf("worker: setup failed: %w", err)
		}
	}
	// Pipelining announced: this SDK applies the ep rule itself (see call).
	if _, err := out.Write(wire.AppendReady(nil, true)); err != nil {
		return fmt.Errorf("worker: writing to taskd: %w", err)
	}

	go s.read(wire.NewLineReader(in, maxLine))
	err := s.execute()
	if err != nil && err != errExit {
		// A write or CheckoutDone error while taskd still holds stdin open: stop the
		// reader by closing its input (Run's input is pollable, so this interrupts a
		// pending Read; an io.Reader that is not a Closer ends only at EOF).
		if c, ok := in.(io.Closer); ok {
			c.Close()
		}
	}
	<-s.stopped
	if err == nil || err == errExit {
		err = s.readErr
	}
	return err
}

// read is the reader goroutine: it queues calls and dones, and handles cancels at once.
// When in ends it cancels every call, running or queued.
func (s *server) read(lr *wire.LineReader) {
	defer close(s.stopped)
	defer s.cancelAll()
	for {
		line, err := lr.ReadLine()
		switch {
		case errors.Is(err, io.EOF):
			return
		case errors.Is(err, wire.ErrLineTooLong):
			s.readErr = fmt.Errorf("worker: taskd sent %w; TASKD_MAX_MESSAGE_BYTES must match taskd's max_message_bytes", err)
			return
		case err != nil:
			s.readErr = fmt.Errorf("worker: reading from taskd: %w", err)
			return
		}
		m, err := wire.DecodeWorkerMsg(line)
		if err != nil {
			s.log.Warn("worker: ignoring a malformed line from taskd", zap.Error(err))
			continue
		}
		switch m.T {
		case wire.TCall, wire.TDone:
			m.A = bytes.Clone(m.A) // m aliases the reader's line buffer; copied before locking
			s.mu.Lock()
			s.queue = append(s.queue, m)
			s.mu.Unlock()
			select {
			case s.wake <- struct{}{}:
			default:
			}
		case wire.TCancel:
			s.cancel(m.ID)
		}
	}
}

// cancel cancels the running call id, or marks it if it is still queued.
func (s *server) cancel(id uint64) {
	var cancel context.CancelFunc
	s.mu.Lock()
	if s.curID == id {
		// Taken off the queue: running, or about to run (then call sees the mark).
		if s.runCancel != nil {
			cancel = s.runCancel
		} else {
			s.cancelled[id] = struct{}{}
		}
	} else {
		for _, m := range s.queue {
			if m.T == wire.TCall && m.ID == id {
				s.cancelled[id] = struct{}{}
				break
			}
		}
	}
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// next returns the next queued message, or false once the queue is empty and the reader
// has stopped.
func (s *server) next() (wire.WorkerMsg, bool) {
	for {
		if m, ok := s.pop(); ok {
			return m, true
		}
		select {
		case <-s.wake:
		case <-s.stopped:
			return s.pop()
		}
	}
}

func (s *server) pop() (wire.WorkerMsg, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return wire.WorkerMsg{}, false
	}
	m := s.queue[0]
	s.queue[0] = wire.WorkerMsg{}
	s.queue = s.queue[1:]
	if m.T == wire.TCall {
		s.curID = m.ID // in the same critical section, so that no cancel is lost
	}
	return m, true
}

// execute is the executor loop.
func (s *server) execute() error {
	for {
		m, ok := s.next()
		if !ok {
			return nil
		}
		var err error
		switch m.T {
		case wire.TCall:
			err = s.call(m)
		case wire.TDone:
			err = s.checkoutDone()
		}
		if err != nil {
			return err
		}
	}
}

var errReplyTooLarge = errors.New("reply too large")

// call answers one call taken off the queue: "aborted" if the ep rule says it is queued
// behind an error, an UnknownMethod error if nothing handles it, else the Func's result.
func (s *server) call(m wire.WorkerMsg) error {
	f := s.spec.Default
	if m.M != "" {
		f = s.spec.Methods[m.M]
	}
	if m.HasEp && m.Ep < s.errs {
		// Made before the application had seen an error this checkout raised: not run.
		s.endCall(m.ID)
		s.line = wire.AppendAborted(s.line[:0], m.ID)
		return s.flush()
	}
	c := &Call{Method: m.M, Log: s.calls, args: m.A}
	if f == nil {
		s.endCall(m.ID)
		return s.reply(m.ID, c, nil, s.unknown(m.M), nil)
	}

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	s.mu.Lock()
	_, cancelled := s.cancelled[m.ID]
	delete(s.cancelled, m.ID)
	s.runCancel = cancel
	s.mu.Unlock()
	if cancelled {
		// Cancelled before it started: the handler runs with its context already done,
		// as the Python and Perl SDKs run it with cancelled() already true.
		cancel()
	}
	s.rec.start()
	res, err := s.invoke(ctx, func(ctx context.Context) (any, error) { return f(ctx, c) })
	logs := s.rec.stop()
	s.endCall(m.ID)
	if err == errExit {
		return err
	}
	return s.reply(m.ID, c, res, err, logs)
}

// endCall records that call id is over (or will not run), before its reply is written:
// a cancel that arrives from now on finds nothing to do, and an earlier one's mark goes.
func (s *server) endCall(id uint64) {
	s.mu.Lock()
	s.curID, s.runCancel = 0, nil
	delete(s.cancelled, id)
	s.mu.Unlock()
}

func (s *server) unknown(method string) error {
	if method == "" {
		return &Error{Type: "UnknownMethod", Msg: fmt.Sprintf("this worker takes no function-style calls; call one of its methods: %s", s.methodList())}
	}
	return &Error{Type: "UnknownMethod", Msg: fmt.Sprintf("unknown method %q; this worker has: %s", method, s.methodList())}
}

func (s *server) methodList() string {
	names := make([]string, 0, len(s.spec.Methods))
	for name := range s.spec.Methods {
		names = append(names, strconv.Quote(name))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// invoke runs f in its own goroutine and waits for it. A panic or runtime.Goexit in f
// becomes an *Error of type "panic" whose trace is the stack of f's goroutine. Once stdin
// has closed (which cancels ctx), invoke waits only until exitGrace after the executor
// first noticed, then returns errExit (and only then); a Func that ignores its context is
// left running.
func (s *server) invoke(ctx context.Context, f func(context.Context) (any, error)) (any, error) {
	type outcome struct {
		res any
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		o := outcome{err: &Error{Type: "panic", Msg: "the function called runtime.Goexit instead of returning"}}
		defer func() {
			if v := recover(); v != nil {
				msg := fmt.Sprint(v)
				if e, ok := v.(error); ok {
					msg = e.Error()
				}
				o.err = &Error{Type: "panic", Msg: msg, Trace: string(debug.Stack())}
			}
			done <- o
		}()
		o.res, o.err = f(ctx)
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-s.stopped:
	}
	if s.grace == nil {
		s.grace = time.NewTimer(exitGrace)
	}
	select {
	case o := <-done:
		return o.res, o.err
	case <-s.grace.C:
		return nil, errExit
	}
}

func (s *server) checkoutDone() error {
	s.errs = 0 // a new checkout starts with no errors
	if s.spec.CheckoutDone == nil {
		return nil
	}
	_, err := s.invoke(s.ctx, func(ctx context.Context) (any, error) {
		return nil, s.spec.CheckoutDone(ctx)
	})
	if err != nil && err != errExit {
		p := errorPayload(err)
		err = fmt.Errorf("worker: CheckoutDone failed, exiting so that this worker serves no further checkout: %w", err)
		if p.Trace != "" {
			s.log.Error("worker: CheckoutDone failed", zap.String("trace", p.Trace))
		}
	}
	return err
}

// reply writes the reply to call id, preceded by a "bye" line if c asked for one, with
// a single Write.
func (s *server) reply(id uint64, c *Call, res any, err error, logs []wire.LogRecord) error {
	s.line = s.line[:0]
	if bye, msg := c.byeRequest(); bye {
		s.line = wire.AppendBye(s.line, msg)
	}
	start := len(s.line)
	s.val.Reset()
	if err == nil {
		if eerr := s.encode(res); eerr != nil {
			err = fmt.Errorf("%s returned a result that cannot be encoded as JSON: %w", c.what(), eerr)
		}
	}
	if err != nil {
		s.encode(errorPayload(err))
	}
	n := s.val.Len()
	if len(logs) > 0 {
		s.encode(logs)
	}
	payload, encLogs := s.val.Bytes()[:n], s.val.Bytes()[n:]
	if err == nil {
		s.line = wire.AppendOK(s.line, 0, id, payload, encLogs)
	} else {
		s.line = wire.AppendErr(s.line, 0, id, payload, encLogs)
	}
	if size := len(s.line) - start - 1; size > s.max {
		err = errReplyTooLarge
		s.val.Reset()
		s.encode(wire.ErrorPayload{
			Type: "ReplyTooLarge",
			Msg:  fmt.Sprintf("the reply of %s is %d bytes, more than max_message_bytes (%d): return less, or raise max_message_bytes", c.what(), size, s.max),
		})
		s.line = wire.AppendErr(s.line[:start], 0, id, s.val.Bytes(), nil)
	}
	if err != nil {
		s.errs++ // an err reply: calls made before the application saw it are not run
	}
	return s.flush()
}

// flush writes line with a single Write.
func (s *server) flush() error {
	eof := false
	select {
	case <-s.stopped:
		eof = true
	default:
	}
	if _, err := s.out.Write(s.line); err != nil {
		if eof {
			return errExit // taskd closed stdin and stopped reading: nothing to report
		}
		return fmt.Errorf("worker: writing to taskd: %w", err)
	}
	return nil
}

// encode appends v to val as JSON without a trailing newline. On error val is unchanged.
func (s *server) encode(v any) error {
	if err := s.enc.Encode(v); err != nil {
		return err
	}
	s.val.Truncate(s.val.Len() - 1) // Encode's newline
	return nil
}
