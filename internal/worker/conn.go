package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/fdio"
	"github.com/taskd-dev/taskd/internal/sendq"
	"github.com/taskd-dev/taskd/internal/wire"
)

// Reply is the outcome of one call, delivered exactly once to the callback given to Call.
// Result, Error and Logs are slices of the worker's read buffer, valid only until the
// callback returns (so that relaying a reply copies nothing): use Clone to keep them.
type Reply struct {
	OK      bool            // true: Result holds "r"; false: Error holds "e" (if Err is nil)
	Aborted bool            // the worker did not run the call: its ep was behind (pipelining)
	Result  json.RawMessage // "r"
	Error   json.RawMessage // "e": {"msg","type","trace"}
	Logs    json.RawMessage // "logs", or nil
	// Err, if not nil, means there is no answer: the worker ended before replying (an
	// *ExitError), or its calls were interrupted (see Worker.Interrupt; the error wraps
	// the cause given, or ErrCallTimeout).
	Err error
}

// Clone returns a Reply whose payloads the caller owns.
func (r Reply) Clone() Reply {
	r.Result = bytes.Clone(r.Result)
	r.Error = bytes.Clone(r.Error)
	r.Logs = bytes.Clone(r.Logs)
	return r
}

// A Replier receives the reply to a call: OnReply is called exactly once, from the
// worker's stdout reader or waiter goroutine, and must not block.
type Replier interface {
	OnReply(Reply)
}

// ReplyFunc makes a function a Replier.
type ReplyFunc func(Reply)

// OnReply calls f.
func (f ReplyFunc) OnReply(r Reply) { f(r) }

type call struct {
	id        uint64
	method    string
	started   time.Time // when it became the oldest unanswered call: the one running
	r         Replier   // nil once interrupt has answered it: its late reply is dropped
	cancelled bool      // a cancel was written for it
}

// conn is the protocol side of a worker: it writes calls, cancels and dones to the
// worker's stdin through a send queue, decodes its stdout, matches replies to the calls
// outstanding, enforces call_timeout, and keeps what the worker announced (ready,
// pipeline, bye). It never signals the process: when the worker must go (a protocol
// error, a call over its timeout, a stdin it does not read) it asks its Worker, through
// kill.
//
// Goroutines and timers: init starts the send queue's writer (sendq owns it); start
// starts the stdout reader, the only reader of the protocol, which returns at EOF, when
// drain closes the pipe, or at a line over max_message_bytes (having killed the worker).
// drain also aborts the send queue and waits for its writer.
// The call_timeout timer is made on the first call and stopped by fail; the cancel_grace
// timer is made by interrupt (never on the way of a call that nobody gives up) and
// stopped by the last answer or fail. The Worker's waiter calls drain, then fail.
//
// Every call handed to call gets exactly one reply: from the stdout reader (deliver), from
// interrupt, which answers the calls it cancels at once (their late answers are dropped),
// or from fail, which refuses every call after it.
//
// init and start come first; drain and fail are the waiter's alone. The other methods are
// safe for concurrent use.
type conn struct {
	// Set by init, read-only after.
	id       string // the worker's id, for errors
	log      *zap.Logger
	maxBytes int
	kill     func(cause error) // the Worker's Kill; never called with mu held

	in      *sendq.Queue // owns stdin: callers hand it whole lines and never block on a full pipe
	stdout  *os.File
	outDone chan struct{} // closed when the stdout reader returns

	mu          sync.Mutex
	callTimeout time.Duration // live: setCallTimeout
	cancelGrace time.Duration // live: setCancelGrace; <= 0: interrupt kills at once
	calls       []call        // unanswered calls in the order sent: calls[0] is the one running
	nextID      uint64
	timer       *time.Timer // call_timeout (see armLocked), made on the first call
	timerArmed  bool
	refused     error // non-nil: new calls fail with it (the worker is going, or gone)
	failed      bool  // fail has run
	protoErr    error // the first protocol error, for Start's message

	// Set by interrupt: the worker serves no more calls, and is killed unless the calls it
	// cancelled are answered within cancelGrace.
	interrupted error
	killing     bool        // interrupt decided to kill it (no grace, or the grace ran out)
	graceTimer  *time.Timer // cancel_grace, made by interrupt
	settled     func()      // see interrupt: called once, then nil

	bye      atomic.Bool
	pipeline atomic.Bool   // announced in "ready": applies the ep rule itself
	leaseVer atomic.Int32  // announced in "ready": the lease extension's version (0: none)
	ready    chan struct{} // closed on the first "ready"
}

// init sets c up on the worker's stdin and stdout and starts the send queue's writer.
func (c *conn) init(cfg Config, log *zap.Logger, stdin, stdout *os.File, kill func(error)) {
	c.id, c.log, c.callTimeout, c.maxBytes, c.kill = cfg.ID, log, cfg.CallTimeout, maxBytes(cfg), kill
	c.cancelGrace = cfg.CancelGrace
	c.stdout, c.outDone, c.ready = stdout, make(chan struct{}), make(chan struct{})
	c.in = sendq.New(stdin, func(err error) {
		// The worker closed its stdin, died, or stopped reading it; the waiter fails its
		// calls.
		c.kill(fmt.Errorf("writing to worker stdin: %w", err))
	}).WithLimit(sendq.BacklogFor(c.maxBytes))
}

// start starts the stdout reader.
func (c *conn) start() { go c.readStdout() }

func maxBytes(cfg Config) int {
	if cfg.MaxMessageBytes <= 0 {
		return wire.DefaultMaxMessageBytes
	}
	return cfg.MaxMessageBytes
}

// call records a call and queues its line (see Worker.CallEp).
func (c *conn) call(method string, args json.RawMessage, ep uint64, r Replier) (uint64, error) {
	c.mu.Lock()
	if c.refused != nil {
		err := c.refused
		c.mu.Unlock()
		return 0, err
	}
	c.nextID++
	id := c.nextID
	c.calls = append(c.calls, call{id: id, method: method, r: r}) // by value: no allocation
	if len(c.calls) == 1 {
		c.armLocked()
	}
	c.mu.Unlock()

	if !c.pipeline.Load() {
		ep = wire.NoEp // only a pipelining worker applies the ep rule
	}
	c.in.Append(func(b []byte) []byte { return wire.AppendCall(b, 0, id, ep, method, args) })
	return id, nil
}

// armLocked starts the call_timeout of c.calls[0]: it is now the oldest unanswered call,
// so the worker is running it (calls are answered in order). c.mu is held.
//
// One timer serves all calls and is not moved as they come and go, which would cost a
// timer operation per call: armed, it fires at the deadline of the call that was running
// then, and checkTimeout re-arms it for the call running at that moment.
func (c *conn) armLocked() {
	c.calls[0].started = time.Now()
	d := c.callTimeout
	if d <= 0 || c.timerArmed || c.failed {
		return
	}
	c.timerArmed = true
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.checkTimeout)
	} else {
		c.timer.Reset(d)
	}
}

// setCallTimeout changes the call_timeout; a running call gets the new deadline (at
// once, if it has already run that long).
func (c *conn) setCallTimeout(d time.Duration) {
	c.mu.Lock()
	c.callTimeout = d
	run := len(c.calls) > 0 && !c.failed && d > 0
	if run && c.timerArmed {
		c.timer.Reset(0) // checkTimeout re-arms it for the new deadline
	}
	if run && !c.timerArmed {
		c.timerArmed = true
		if c.timer == nil {
			c.timer = time.AfterFunc(0, c.checkTimeout)
		} else {
			c.timer.Reset(0)
		}
	}
	c.mu.Unlock()
}

// checkTimeout is the call_timeout timer's function: it kills the worker if the call
// running now has run for call_timeout, and otherwise waits for that call's deadline.
func (c *conn) checkTimeout() {
	c.mu.Lock()
	c.timerArmed = false
	// <= 0: turned off (setCallTimeout). Interrupted: the cancel_grace governs.
	if len(c.calls) == 0 || c.failed || c.callTimeout <= 0 || c.interrupted != nil {
		c.mu.Unlock()
		return
	}
	first, d := c.calls[0], c.callTimeout
	if left := d - time.Since(first.started); left > 0 {
		c.timerArmed = true
		c.timer.Reset(left)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	// The same path as a caller who gives up: cancel, cancel_grace, kill.
	c.interrupt(fmt.Errorf("%w: call %q ran longer than %s", ErrCallTimeout, first.method, d), nil)
}

// indexLocked returns the position of unanswered call id in c.calls, or -1. Calls are
// answered in order, so it is almost always 0. c.mu is held.
func (c *conn) indexLocked(id uint64) int {
	for i := range c.calls {
		if c.calls[i].id == id {
			return i
		}
	}
	return -1
}

// running returns the oldest outstanding call (the one the worker runs) and when the
// worker got to it, or "" if there is none.
func (c *conn) running() (method string, started time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.calls) == 0 {
		return "", time.Time{}
	}
	return c.calls[0].method, c.calls[0].started
}

// cancel queues a cancel for call id if it is still outstanding and was not cancelled
// already.
func (c *conn) cancel(id uint64) {
	c.mu.Lock()
	i := c.indexLocked(id)
	ok := i >= 0 && !c.calls[i].cancelled
	if ok {
		c.calls[i].cancelled = true
	}
	c.mu.Unlock()
	if ok {
		c.in.Append(func(b []byte) []byte { return wire.AppendCancel(b, id) })
	}
}

// done queues the checkout's done.
func (c *conn) done() error {
	if !c.in.Send(wire.DoneLine) {
		return fmt.Errorf("worker %s: stdin closed", c.id)
	}
	return nil
}

// refusedErr returns why new calls fail, or nil if they do not.
func (c *conn) refusedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused
}

// callTimeoutNow returns the call_timeout in force.
func (c *conn) callTimeoutNow() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.callTimeout
}

// cancelGraceNow returns the cancel_grace in force.
func (c *conn) cancelGraceNow() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancelGrace
}

// refuse makes new calls fail with err, unless they fail already.
func (c *conn) refuse(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refused == nil {
		c.refused = err
	}
}

// closeInput closes stdin once what is queued is written: EOF tells the worker to exit.
func (c *conn) closeInput() { c.in.Close() }

// readStdout is the stdout reader: it owns the protocol decoder, and runs until the
// pipe reaches EOF or drain closes it.
func (c *conn) readStdout() {
	defer close(c.outDone)
	defer crash.OnPanic(c.log, "worker stdout") // replies are routed from here, into the daemon's sessions
	// No budget: a worker's lines are answers that a caller waits for, and their memory is
	// bounded by the config (max_workers × max_message_bytes); the budget is for clients.
	lr := wire.NewLineReader(fdio.NewReader(c.stdout), c.maxBytes)
	defer lr.Release()
	for {
		line, err := lr.ReadLine()
		if err != nil {
			var tooLong *wire.LineTooLongError
			if errors.As(err, &tooLong) {
				// Refused as soon as it passed the limit: the rest is never read, and the
				// reader stops here (drain closes the pipe once the worker is reaped).
				c.protocolError(&wire.ProtocolError{
					Reason:  fmt.Sprintf("stdout line longer than %d bytes (max_message_bytes)", tooLong.Limit),
					Snippet: tooLong.Snippet})
			}
			return
		}
		msg, err := wire.DecodeWorkerMsg(line)
		if errors.Is(err, wire.ErrNotObject) {
			c.log.Warn("stray stdout line ignored (not a JSON object); workers must write only protocol messages to stdout",
				zap.String("line", wire.Snippet(line)))
			continue
		}
		if err != nil {
			c.protocolError(err)
			continue
		}
		switch msg.T {
		case wire.TReady:
			select {
			case <-c.ready:
			default:
				c.pipeline.Store(msg.Pipeline)
				c.leaseVer.Store(int32(min(max(msg.Lease, 0), 1<<20)))
				close(c.ready)
			}
		case wire.TOK, wire.TErr, wire.TAborted:
			c.deliver(line, msg)
		case wire.TBye:
			c.bye.Store(true)
			c.log.Info("worker asked to be retired", zap.String("msg", msg.Msg))
		}
	}
}

// deliver hands a reply to its call's Replier. The stdout reader calls it.
func (c *conn) deliver(line []byte, msg wire.WorkerMsg) {
	c.mu.Lock()
	i := c.indexLocked(msg.ID)
	var r Replier
	var settled func()
	if i >= 0 {
		r = c.calls[i].r
		c.calls = slices.Delete(c.calls, i, i+1)
		// The next unanswered call is the one the worker runs now: its timeout starts.
		if len(c.calls) > 0 && c.calls[0].started.IsZero() {
			c.armLocked()
		}
		if c.interrupted != nil {
			settled = c.settledLocked()
		}
	}
	c.mu.Unlock()
	if i < 0 {
		c.protocolError(wire.NewProtocolError(line, "reply for id %d, which is not an outstanding call", msg.ID))
		return
	}
	if r == nil { // answered by interrupt already: a late answer, dropped
		if settled != nil {
			settled()
		}
		return
	}
	// The payloads alias the line buffer: no copy on the relay path (see Reply).
	r.OnReply(Reply{OK: msg.T == wire.TOK, Aborted: msg.T == wire.TAborted,
		Result: msg.R, Error: nilIfEmpty(msg.E), Logs: nilIfEmpty(msg.Logs)})
	if settled != nil {
		settled()
	}
}

func nilIfEmpty(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return b
}

func (c *conn) protocolError(err error) {
	c.log.Error("worker broke the protocol; killing it", zap.Error(err))
	c.mu.Lock()
	if c.protoErr == nil {
		c.protoErr = err
	}
	c.mu.Unlock()
	c.kill(err)
}

// protocolErr returns the first protocol error the worker made, or nil.
func (c *conn) protocolErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.protoErr
}

// drain waits for the stdout reader to reach EOF, or until late is closed (a grandchild
// may hold the pipe open), closes stdout, and stops the send queue, waiting for its
// writer. The waiter calls it once the process has been reaped.
func (c *conn) drain(late <-chan struct{}) {
	select {
	case <-c.outDone:
	case <-late:
		c.stdout.Close()
		<-c.outDone
	}
	c.stdout.Close()
	c.in.Abort()
	<-c.in.Done()
}

// fail refuses every call from now on with ee, stops the call_timeout timer, and fails
// the calls still outstanding with ee, in the order they were sent. It returns how many
// there were. The waiter calls it after drain: no reply can arrive any more.
func (c *conn) fail(ee *ExitError) int {
	c.mu.Lock()
	c.refused, c.failed = ee, true
	calls := c.calls
	c.calls = nil
	if c.timer != nil {
		c.timer.Stop()
		c.timerArmed = false
	}
	if c.graceTimer != nil {
		c.graceTimer.Stop()
	}
	settled := c.settledLocked()
	c.mu.Unlock()
	n := 0
	for _, x := range calls {
		if x.r != nil {
			x.r.OnReply(Reply{Err: ee})
			n++
		}
	}
	if settled != nil {
		settled()
	}
	return n
}
