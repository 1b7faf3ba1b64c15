package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// WorkerInfo identifies the worker process behind a checkout.
type WorkerInfo struct {
	ID  string // taskd's id for the worker, e.g. "passwd-3"
	PID int    // the worker's process id on the daemon's host
}

// Checkout is exclusive use of one worker: every call made on it goes to the same worker
// process, in order. Get one with Client.Checkout and give it back with Release.
//
// A Checkout is safe for concurrent use: calls made concurrently are sent in some order
// and run one at a time. A fatal error (the worker was lost, a call's deadline passed, a
// protocol error, Abort) sticks to the checkout: every later call returns it at once. After
// Release every method returns ErrReleased.
type Checkout struct {
	c    *Client
	cn   *conn
	id   uint64 // "co", chosen by taskd
	info WorkerInfo
	pair *pair // a direct lease's socketpair (direct.go); nil if relayed. Set at grant.
	warm bool  // a warm lease, for one-shot calls (warm.go). Set at grant.

	// onRelease, if set, runs once, at the end of the first Release: a Client of several
	// daemons gives its MaxWorkers slot back (multi.go). Set before the caller gets it.
	onRelease func()

	// Guarded by Client.warm.mu (warm.go).
	parked    bool        // idle in Client.warm
	reclaimed bool        // taskd asked for it back
	warmUses  uint64      // one-shot calls made on it
	warmTimer *time.Timer // releases it once it has been idle for WarmFor

	// mu guards what follows, and the answers of the checkout's Pending calls: the
	// per-call path takes this lock, never Client.mu. Lock order: Client.mu, then mu.
	mu       sync.Mutex
	released bool
	err      error         // sticky fatal error
	gone     chan struct{} // closed when err is set or on Release
	errs     uint64        // remote errors returned to the caller: stamped on calls as "ep"
	nextCall uint64
	calls    map[uint64]*Pending // sent and not answered
}

// Pending is a call started with Checkout.Go. Wait for its result with Wait.
// A Pending is safe for concurrent use.
type Pending struct {
	co     *Checkout
	id     uint64
	method string
	start  time.Time
	err0   error         // failed before it was sent
	done   chan struct{} // closed when answered

	// Guarded by co.mu; set before done is closed.
	r    json.RawMessage
	rp   *[]byte // r's pooled buffer (codec.go)
	err  error
	seen bool // a remote error was returned to the caller (counted in co.errs)
}

// Worker returns the identity of the checkout's worker. It is valid even after Release.
func (co *Checkout) Worker() WorkerInfo { return co.info }

// describe names the checkout for error messages: `"passwd" (worker passwd-3, pid 4242)`.
func (co *Checkout) describe() string {
	return fmt.Sprintf("%q (worker %s, pid %d)", co.c.cfg.Interface, co.info.ID, co.info.PID)
}

// Go sends a call without waiting for its result, so that several calls can be pipelined
// on the worker; collect the result with Pending.Wait. method "" makes a function-style
// call. args are encoded as a JSON array.
//
// Calls pipelined behind a call that raises do not run: their Wait returns ErrAborted. A
// call counts as behind if it was made before that *RemoteError was returned to the
// application (by Call or Wait); calls made afterwards run.
func (co *Checkout) Go(method string, args ...any) *Pending {
	bp := getBuf() // the arguments, until the send queue has copied the call
	a, err := appendArgs(*bp, args)
	defer putBuf(bp, a)
	if err != nil {
		p := &Pending{co: co, method: method, start: time.Now(), done: make(chan struct{})}
		if p.err0 = co.stateErr(); p.err0 == nil { // ErrReleased and a sticky error come first
			p.err0 = fmt.Errorf("client: call %s: encoding arguments: %w (the call was not sent; the checkout is still usable)", callName(co.c.cfg.Interface, method), err)
		}
		return p
	}
	return co.send(method, a, time.Now(), false)
}

// send sends a call whose arguments are encoded already (a, which the send queue has
// copied when it returns), started at start (Config.Timeout counts from it). With done,
// a "done" goes first, on the same write: the worker runs its done hook before the call
// (a warm lease's one-shot calls, warm.go).
func (co *Checkout) send(method string, a []byte, start time.Time, done bool) *Pending {
	p := &Pending{co: co, method: method, start: start, done: make(chan struct{})}
	co.mu.Lock()
	if err := co.stateErrLocked(); err != nil {
		co.mu.Unlock()
		p.err0 = err
		return p
	}
	co.nextCall++
	p.id = co.nextCall
	ep := co.errs // the errors the caller has seen: taskd aborts this call if it is behind
	if co.calls == nil {
		co.calls = make(map[uint64]*Pending)
	}
	co.calls[p.id] = p
	co.mu.Unlock()

	// Queued outside the lock: the arguments may be large, and the write may happen right
	// here. So concurrent calls may be queued in another order than their ids (which need
	// only be unique). If the checkout ended meanwhile, taskd answers fail/unknown_checkout
	// (it never reuses checkout ids), which nobody waits for; if the connection is gone,
	// nothing is sent.
	id := p.id
	if co.pair != nil { // a direct lease: straight to the worker
		co.pair.out.Append(func(b []byte) []byte {
			if done {
				b = append(b, `{"t":"done"}`+"\n"...)
			}
			return wire.AppendCall(b, 0, id, ep, method, a)
		})
		return p
	}
	co.cn.out.Append(func(b []byte) []byte { return wire.AppendCall(b, co.id, id, ep, method, a) })
	return p
}

// Call makes one call on the checkout's worker and waits for its result, which is decoded
// into result (a pointer, as for json.Unmarshal; nil discards it, *json.RawMessage keeps it
// raw). Decoding follows encoding/json: numbers stay exact when decoded into integer types,
// json.Number or json.RawMessage, and become float64 inside an interface{}. method "" makes a
// function-style call.
//
// The call may run until ctx is done, or for Config.Timeout if ctx has no deadline. If that
// ends the call, Call returns at once with an error that matches context.DeadlineExceeded
// or context.Canceled, and the checkout fails for good: the client sends taskd a cancel
// for the call and aborts the checkout; taskd forwards the cancel to the worker and
// retires it, killing it if it has not answered within the interface's cancel_grace
// (docs/worker-protocol.md). If ctx is done before the call is sent, Call returns ctx's
// error and the checkout stays usable.
//
// A *RemoteError means the worker raised; the checkout stays usable.
func (co *Checkout) Call(ctx context.Context, method string, result any, args ...any) error {
	if err := ctx.Err(); err != nil {
		if serr := co.stateErr(); serr != nil {
			return serr // ErrReleased and a sticky error come first, as from Go
		}
		return fmt.Errorf("client: call %s not sent: %w", callName(co.c.cfg.Interface, method), err)
	}
	p := co.Go(method, args...)
	err := p.Wait(ctx, result)
	p.recycle() // nobody else sees p
	return err
}

// recycle gives the buffer of the call's result back to the pool. Only the owner of a
// Pending that nobody else can Wait for may call it, after Wait: an answer that has not
// come by then never will (Wait returned because the checkout ended).
func (p *Pending) recycle() {
	co := p.co
	co.mu.Lock()
	r, rp := p.r, p.rp
	p.r, p.rp = nil, nil
	co.mu.Unlock()
	recycleResult(r, rp)
}

// Wait waits for the call's result and decodes it into result, like Checkout.Call. If ctx
// has no deadline, Config.Timeout counts from when the call was started with Go. If ctx
// ends first, the checkout fails for good (see Checkout.Call). Wait may be called more than
// once; after the checkout is released it returns ErrReleased, and after a fatal error of
// the checkout that error, even if the call's answer had arrived.
func (p *Pending) Wait(ctx context.Context, result any) error {
	if p.err0 != nil {
		return p.err0
	}
	co := p.co
	c := co.c
	gaveUp := p.await(ctx)

	co.mu.Lock()
	if gaveUp != nil && !p.answered() {
		co.giveUpLocked(p, p.ctxErr(gaveUp)) // does nothing if the checkout ended already
	}
	if err := co.stateErrLocked(); err != nil {
		co.mu.Unlock()
		return err
	}
	r, err := p.r, p.err
	if _, remote := err.(*RemoteError); remote && !p.seen {
		// The caller now knows of this error: calls it makes from here on run; those it
		// made before are aborted by taskd (their "ep" is behind).
		p.seen = true
		co.errs++
	}
	co.mu.Unlock()
	if err != nil {
		return err
	}
	return decodeResult(r, result, c.cfg.Interface, p.method)
}

// await waits until the call is answered or its checkout ends, and returns nil; or until
// ctx is done or, if ctx has no deadline, Config.Timeout has passed since Go, and returns
// the matching context error.
func (p *Pending) await(ctx context.Context) error {
	if p.answered() {
		return nil // no timer needed (pipelined calls are often answered before Wait)
	}
	c := p.co.c
	var timeout <-chan time.Time
	t := c.timeoutTimer(ctx, p.start)
	if t != nil {
		defer c.putTimer(t)
		timeout = t.C
	}
	if pr := p.co.pair; pr != nil {
		deadline, ok := ctx.Deadline()
		if !ok && t != nil {
			deadline = p.start.Add(c.timeout)
		}
		return p.awaitPair(ctx, pr, timeout, deadline)
	}
	select {
	case <-p.done:
	case <-p.co.gone:
	case <-ctx.Done():
		return ctx.Err()
	case <-timeout:
		return context.DeadlineExceeded
	}
	return nil
}

// answered reports whether the call's answer has arrived.
func (p *Pending) answered() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// timeoutTimer returns a timer that fires once Config.Timeout has passed since start, or
// nil if ctx has a deadline (which then bounds the wait instead) or there is no timeout.
// Timers are pooled (give them back with putTimer): Config.Timeout costs a call or a
// checkout no allocation.
func (c *Client) timeoutTimer(ctx context.Context, start time.Time) *time.Timer {
	if _, ok := ctx.Deadline(); ok || c.timeout <= 0 {
		return nil
	}
	d := time.Until(start.Add(c.timeout))
	if t, ok := c.timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

func (c *Client) putTimer(t *time.Timer) {
	t.Stop() // since Go 1.23 no stale value can be received after Stop
	c.timers.Put(t)
}

func (p *Pending) ctxErr(err error) error {
	name := callName(p.co.c.cfg.Interface, p.method)
	what := "was cancelled"
	if errors.Is(err, context.DeadlineExceeded) {
		what = fmt.Sprintf("passed its deadline after %v", time.Since(p.start).Round(time.Millisecond))
	}
	return fmt.Errorf("client: call %s %s (%w); it was cancelled, its worker (%s, pid %d) is retired (killed if it does not stop within the interface's cancel_grace), and the checkout is unusable: release it and check out again (give the call a longer deadline or Config.Timeout if it needs more time)",
		name, what, err, p.co.info.ID, p.co.info.PID)
}

// giveUpLocked fails the checkout for good with err because the caller of call p gave up
// on it: it tells taskd to cancel p (which taskd forwards to the worker if it runs it)
// and to abort the checkout, in one write. It does nothing if the checkout ended already.
// co.mu is held.
func (co *Checkout) giveUpLocked(p *Pending, err error) {
	if co.released || co.err != nil {
		return
	}
	if co.pair != nil {
		co.fatalLocked(err, true) // taskd cancels the call on the worker's control channel
		return
	}
	cancel := wire.ClientMsg{T: wire.TCancel, Co: co.id, ID: p.id}
	abort := wire.ClientMsg{T: wire.TAbort, Co: co.id, Msg: err.Error()}
	co.fatalLocked(err, false)
	if !co.cn.gone.Load() {
		co.cn.out.Append(func(b []byte) []byte {
			b, _ = wire.AppendClientMsg(b, &cancel)
			b, _ = wire.AppendClientMsg(b, &abort)
			return b
		})
	}
}

// Abort fails the checkout for good (AnyEvent::Task's throw_fatal_error): calls waiting
// now return at once, and every later call returns the same error, which matches
// ErrAborted and err (if not nil). taskd cancels the calls the worker has not answered and
// retires the worker, killing it unless it answers them within the interface's
// cancel_grace (at once if none is outstanding, or if cancel_grace is 0). Abort does
// nothing if the checkout already failed or was released; Release it afterwards as usual.
func (co *Checkout) Abort(err error) {
	co.mu.Lock()
	defer co.mu.Unlock()
	co.fatalLocked(&abortError{what: co.describe(), cause: err}, true) // does nothing if the checkout ended already
}

// Release gives the worker back to taskd, which pools it or retires it: it retires it if a
// call on this checkout raised (unless Config.KeepWorkerAfterError), if the worker has
// served Config.MaxCheckouts checkouts, or if calls are still unanswered (their Wait then
// returns ErrReleased). Release is idempotent; afterwards every method of the checkout
// returns ErrReleased.
func (co *Checkout) Release() {
	if co.pair != nil {
		co.c.drainPair(co, co.pair) // answers that came, unread: those calls are answered
	}
	co.mu.Lock()
	if co.released {
		co.mu.Unlock()
		return
	}
	alive := co.err == nil
	co.released = true
	if alive {
		close(co.gone)
		co.cn.cos.Delete(co.id)
		if co.pair != nil {
			co.releasePairLocked()
		} else {
			// taskd decides whether to pool or retire the worker: it knows of the errors
			// (and KeepWorkerAfterError) and of MaxCheckouts from the checkout request.
			co.cn.send(&wire.ClientMsg{T: wire.TRelease, Co: co.id})
		}
	}
	co.calls = nil
	co.mu.Unlock()

	c := co.c
	c.mu.Lock()
	if co.warm {
		c.stats.WarmLeases--
	} else {
		c.stats.OpenCheckouts--
	}
	c.freeSlotLocked()
	c.mu.Unlock()
	if co.onRelease != nil {
		co.onRelease()
	}
}

// stateErr returns ErrReleased or the sticky error, if any.
func (co *Checkout) stateErr() error {
	co.mu.Lock()
	defer co.mu.Unlock()
	return co.stateErrLocked()
}

func (co *Checkout) stateErrLocked() error {
	if co.released {
		return ErrReleased
	}
	return co.err
}

// fatalLocked makes err the checkout's sticky error and wakes every waiting call, unless
// the checkout was released or failed already. With abort set it tells taskd to abort the
// checkout (taskd interrupts the worker: cancel, cancel_grace, kill); taskd then sends
// nothing more about it. co.mu is held.
func (co *Checkout) fatalLocked(err error, abort bool) {
	if co.released || co.err != nil {
		return
	}
	co.err = err
	close(co.gone)
	co.calls = nil
	if co.pair != nil {
		co.pair.closeLocked() // the worker sees EOF and waits for taskd's end
	}
	co.cn.cos.Delete(co.id)
	if abort {
		co.cn.send(&wire.ClientMsg{T: wire.TAbort, Co: co.id, Msg: err.Error()})
	}
}

// fail is fatalLocked for a caller that does not hold co.mu.
func (co *Checkout) fail(err error, abort bool) {
	co.mu.Lock()
	co.fatalLocked(err, abort)
	co.mu.Unlock()
}

// reply handles ok, err and fail for a call. It runs on the reader goroutine: worker logs
// are emitted here, outside the lock and before the caller is woken, so they arrive in
// order and before the call returns.
func (c *Client) reply(cn *conn, m *wire.ClientMsg) {
	co := cn.checkout(m.Co)
	if co == nil {
		return // released or failed meanwhile: nobody waits for it
	}
	var r json.RawMessage
	var rp *[]byte
	if m.T == wire.TOK {
		r, rp = copyResult(m.R) // m aliases the reader's buffer; Wait may come later
	}
	co.mu.Lock()
	p := co.calls[m.ID]
	delete(co.calls, m.ID)
	if p == nil || (m.T == wire.TOK && len(m.Logs) == 0) {
		// Nobody waits for it (aborted, released, or failed meanwhile); or the common
		// case, with nothing to do outside the lock.
		if p != nil {
			p.answerLocked(r, rp, nil)
		}
		co.mu.Unlock()
		return
	}
	co.mu.Unlock()

	if len(m.Logs) > 0 {
		c.emitLogs(co.info, p.method, m.Logs)
	}
	err := c.answerErr(m, p.method)
	// A call that was not run because of what it was (aborted, or not UTF-8) leaves the
	// checkout usable; any other failure is fatal to it.
	fatal := m.T == wire.TFail && m.Code != wire.CodeAborted && m.Code != wire.CodeInvalidUTF8

	co.mu.Lock()
	p.answerLocked(r, rp, err)
	if fatal {
		co.fatalLocked(err, false)
	}
	co.mu.Unlock()
}

// answerErr is the error that answer m (ok, err, fail or lost) of a call gives its caller.
func (c *Client) answerErr(m *wire.ClientMsg, method string) error {
	switch m.T {
	case wire.TErr:
		var e wire.ErrorPayload
		if jerr := json.Unmarshal(m.E, &e); jerr != nil {
			e.Msg = fmt.Sprintf("(undecodable error payload %s: %v)", wire.Snippet(m.E), jerr)
		}
		return &RemoteError{Interface: c.cfg.Interface, Method: method, Message: e.Msg, Type: e.Type, Trace: e.Trace}
	case wire.TFail, wire.TLost:
		return daemonError("call "+callName(c.cfg.Interface, method), m.Code, m.Msg)
	}
	return nil
}

func (p *Pending) answerLocked(r json.RawMessage, rp *[]byte, err error) {
	p.r, p.rp, p.err = r, rp, err
	close(p.done)
}

func decodeResult(r json.RawMessage, result any, iface, method string) error {
	switch res := result.(type) {
	case nil:
		return nil
	case *json.RawMessage:
		*res = append((*res)[:0], r...)
		return nil
	}
	if err := json.Unmarshal(r, result); err != nil {
		return fmt.Errorf("client: call %s: decoding result %s into %T: %w (the call succeeded; fix the result type)", callName(iface, method), wire.Snippet(r), result, err)
	}
	return nil
}
