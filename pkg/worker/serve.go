package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// exitGrace is how long serve goes on, after stdin closed, answering the messages it had
// read, with their contexts cancelled.
const exitGrace = time.Second

// tickPeriod is the supervisor's period while calls run: a call still running on two
// consecutive ticks gets a watcher (see stream), so a cancel or EOF that arrives during a
// long call is seen within two periods. Between bursts of calls the supervisor sleeps.
const tickPeriod = time.Millisecond

// server is one run of the protocol. The goroutine that called serve is its supervisor: it
// starts the stdin stream's runner, gives streams watchers when a call runs long, and
// decides when serve returns. Calls run one at a time across streams (execMu).
type server struct {
	spec  Spec
	max   int
	log   *zap.Logger // the SDK's own messages, to stderr
	calls *zap.Logger // handed to calls: stderr plus rec
	rec   *recorder

	ctx       context.Context // parent of Setup's and CheckoutDone's context; cancelled when stdin closes
	cancelAll context.CancelFunc
	// callParent is the parent of every call's context: ctx's values without its
	// cancellation (cheaper children); cancelCalls cancels calls instead.
	callParent     context.Context
	callsCancelled atomic.Bool // calls start with their context cancelled

	stdin  *stream
	ctl    *control   // the lease control socket; nil without leases
	stats  *statsPage // the shared stats page; nil without one
	leases leases

	// execMu is held while a Func or CheckoutDone runs, by the runner that runs it: one at a
	// time, whichever stream it came from. Its holder is the stats page's only writer.
	execMu sync.Mutex

	runs   atomic.Uint64          // runs (calls and dones) started, ever
	cur    atomic.Pointer[stream] // the stream running something now; nil if none
	parked atomic.Bool            // the supervisor sleeps until kick
	kick   chan struct{}          // capacity 1: a run started while the supervisor slept

	closeOnce sync.Once
	closed    chan struct{} // closed when stdin or the control socket ended: exit
	fatal     chan error    // capacity 1: a lease's CheckoutDone failed

	wmu       sync.Mutex // held while a reply is written, so that none is written once abandoned
	abandoned bool       // serve returned while a Func still ran; guarded by wmu
}

// errExit stops a runner without an error of its own: serve gave up on it.
var errExit = errors.New("worker: stdin closed")

// endpoints are what serve talks over.
type endpoints struct {
	in      io.Reader // taskd's calls; if an io.Closer, closed to stop a pending read
	out     io.Writer // replies, one Write each
	stderr  io.Writer // the SDK's log output
	maxLine int       // the longest line accepted; <= 0: wire.DefaultMaxMessageBytes
	control *control  // lease control socket, or nil
	stats   *statsPage
	// leaseErr says why the lease endpoints taskd named are unusable: logged, and the
	// worker goes on without leases.
	leaseErr error
}

// serve runs the protocol over in and out without leases; see serveOn.
func serve(ctx context.Context, spec Spec, in io.Reader, out io.Writer, stderr io.Writer, maxLine int) error {
	return serveOn(ctx, spec, endpoints{in: in, out: out, stderr: stderr, maxLine: maxLine})
}

// serveOn runs the protocol: Setup, "ready", then calls read from e.in (and from the
// leases taskd gives over e.control) until e.in ends. Lines longer than e.maxLine are
// fatal. ctx is the parent of the contexts handed to Setup, calls and CheckoutDone. serveOn
// returns when e.in has ended and the messages read before are answered (nil, or the read
// error), at most exitGrace after it ended, or on a write, Setup or CheckoutDone error,
// after closing e.in if it is an io.Closer. Its goroutines have returned by then, except a
// Func that ignores its context past exitGrace and a read of an input that closing does not
// interrupt (a blocking descriptor: Run's caller exits).
func serveOn(ctx context.Context, spec Spec, e endpoints) error {
	if err := spec.validate(); err != nil {
		return err
	}
	if e.maxLine <= 0 {
		e.maxLine = wire.DefaultMaxMessageBytes
	}
	s := &server{
		spec:   spec,
		max:    e.maxLine,
		rec:    &recorder{},
		kick:   make(chan struct{}, 1),
		closed: make(chan struct{}),
		fatal:  make(chan error, 1),
		ctl:    e.control,
		stats:  e.stats,
	}
	s.log, s.calls = newLoggers(spec.Logger, e.stderr, s.rec)
	if e.leaseErr != nil {
		s.log.Warn("worker: direct leases off, taskd relays calls over stdin", zap.Error(e.leaseErr))
	}
	s.ctx, s.cancelAll = context.WithCancel(ctx)
	defer s.cancelAll()
	s.callParent = context.WithoutCancel(s.ctx)

	if spec.Setup != nil {
		if err := isolated(s.ctx, spec.Setup); err != nil {
			return fmt.Errorf("worker: setup failed: %w", err)
		}
	}
	s.stats.init()
	lease := 0
	if s.ctl != nil && s.stats != nil {
		lease = leaseVersion
	}
	// Pipelining announced: this SDK applies the ep rule itself (see call).
	if _, err := e.out.Write(wire.AppendReadyLease(nil, true, lease)); err != nil {
		return fmt.Errorf("worker: writing to taskd: %w", err)
	}

	s.stdin = s.newStream(0, e.in, e.out)
	defer context.AfterFunc(s.ctx, s.cancelCalls)() // stdin's end, or serveOn's caller
	stdinDone := make(chan error, 1)
	go s.stdin.loop(nil, stdinDone)
	var ctlDone chan struct{}
	if lease > 0 {
		ctlDone = make(chan struct{})
		go s.ctl.read(s, ctlDone)
	}

	err, stdinReturned := s.supervise(stdinDone)
	s.cancelAll()
	s.stopLeases()
	if ctlDone != nil {
		s.ctl.stop()
		<-ctlDone
	}
	if !stdinReturned || err != nil {
		// The stdin runner may be blocked reading, or a watcher may be: closing the input
		// interrupts that read where it can (a pipe from io.Pipe, a pollable file).
		if c, ok := e.in.(io.Closer); ok {
			c.Close()
		}
	}
	if w := s.stdin.watcherDone(); w != nil && interruptible(e.in) {
		<-w
	}
	if err == errExit {
		err = nil
	}
	return err
}

// supervise runs until the stdin runner returns, a lease fails, or exitGrace after the
// input closed. It reports whether the stdin runner returned.
func (s *server) supervise(stdinDone <-chan error) (error, bool) {
	tick := time.NewTimer(tickPeriod)
	defer tick.Stop()
	var grace <-chan time.Time
	closed := s.closed
	var lastRuns uint64
	var lastBusy bool
	for {
		select {
		case err := <-stdinDone:
			if err == nil || err == errExit {
				// EOF: leases end too; wait for them as for the stdin runner.
				if !s.waitLeases(grace) {
					s.abandon()
				}
				err = nil
			}
			return err, true
		case err := <-s.fatal:
			return err, false
		case <-closed:
			closed = nil
			s.cancelAll()
			s.stopLeases()
			g := time.NewTimer(exitGrace)
			defer g.Stop()
			grace = g.C
		case <-grace:
			s.abandon()
			return nil, false
		case <-s.kick:
			tick.Reset(tickPeriod)
		case <-tick.C:
			st, runs := s.cur.Load(), s.runs.Load()
			if st != nil && lastBusy && runs == lastRuns {
				st.takeover()
			}
			if st == nil && runs == lastRuns {
				// Idle for a whole period: sleep until the next run starts.
				s.parked.Store(true)
				if s.cur.Load() == nil && s.runs.Load() == runs {
					lastBusy = false
					continue
				}
				if !s.parked.CompareAndSwap(true, false) {
					continue // the runner took it and kicks
				}
			}
			lastRuns, lastBusy = runs, st != nil
			tick.Reset(tickPeriod)
		}
	}
}

// started records, in the runner of st, that a call (id > 0) or a done starts.
func (s *server) started(st *stream, id uint64, method string) {
	s.cur.Store(st)
	s.runs.Add(1)
	if id != 0 {
		s.stats.start(id, st.lease, method)
	}
	if s.parked.Load() && s.parked.CompareAndSwap(true, false) {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// ended records that the run started last is over.
func (s *server) ended(call, isErr bool) {
	s.cur.Store(nil)
	if call {
		s.stats.end(isErr)
	}
}

// cancelCalls cancels the running calls and makes every later call start cancelled.
func (s *server) cancelCalls() {
	s.callsCancelled.Store(true)
	s.stdin.cancelRunning()
	s.leases.mu.Lock()
	defer s.leases.mu.Unlock()
	for _, lr := range s.leases.m {
		lr.st.cancelRunning()
	}
}

// inputEnded is called when a stream's input ends: stdin's end means taskd is done with
// this worker.
func (s *server) inputEnded(st *stream) {
	if st.lease == 0 {
		s.close()
	}
}

// close starts the exit: stdin or the control socket ended. Safe for concurrent use.
func (s *server) close() {
	s.closeOnce.Do(func() {
		s.cancelAll()
		close(s.closed)
	})
}

func (s *server) closing() bool {
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// abandon makes sure that no reply is written from now on.
func (s *server) abandon() {
	s.wmu.Lock()
	s.abandoned = true
	s.wmu.Unlock()
}

func (st *stream) watcherDone() chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.watcher
}

// isolated runs f in its own goroutine (Setup: before any stream exists) and waits for it;
// a panic or runtime.Goexit becomes an *Error of type "panic".
func isolated(ctx context.Context, f func(context.Context) error) error {
	done := make(chan error, 1)
	go func() {
		var err error = &Error{Type: "panic", Msg: "the function called runtime.Goexit instead of returning"}
		defer func() { done <- err }()
		_, err = (&stream{}).protect(&running{}, func() (any, error) { return nil, f(ctx) })
	}()
	return <-done
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
