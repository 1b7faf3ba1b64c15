package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/internal/worker"
)

// coState is where a checkout is in its life:
//
//		           grant                release, nothing outstanding
//		request ─────────▶ held ─────────────────────────────────────────▶ released
//		                    │ │                                               ▲
//		                    │ └─ closeWhenAnswered ─▶ closing ─ last answer ──┘
//		                    │    (one-shot)              │
//		                    │                            │ release (client gone),
//		                    │ release with calls         │ abandon, worker lost
//		                    │ outstanding, abort,        ▼
//		                    └─ worker lost ──────────▶ ended
//
//	  - held: the client's calls go to the worker, answered in order. For a worker that
//	    pipelines they are sent as they come, each with its ep, and the worker skips those
//	    behind an error; to other workers taskd sends one call at a time and queues the
//	    rest, applying the ep rule itself (behindLocked decides it, in both cases).
//	  - closing: released "when answered": no new calls; "done" has been written to the
//	    worker after the last call (the worker runs its checkout-done hook after answering),
//	    and the lease goes back to the pool with the last answer. A one-shot checkout
//	    (Client.Call) enters it as soon as its one call is sent, so that the call and the
//	    done reach the worker in one write (the worker's stdin is corked meanwhile). If
//	    its answer comes first (the call went out with a write already under way), the
//	    answer ends it all the same: held → released, with the done written then.
//	  - released: the lease went back to the pool, after a "done" unless the worker is
//	    retired (decided by retireLocked, then by the pool's own rules).
//	  - ended: the client is done with the checkout (it aborted, gave up a call, or released
//	    it with calls outstanding), or the worker was lost. The worker is interrupted
//	    (worker.Interrupt): its unanswered calls get a cancel and cancel_grace to answer,
//	    and it is killed if they are not answered by then. Nothing more is sent to the
//	    client about the checkout, and the lease goes back retired once the worker has
//	    settled (answered, killed or exited). A worker whose calls were cancelled is never
//	    pooled again, even if it answered in time: the cancel may have left it in the
//	    middle of something.
//
// released and ended are final: the checkout is forgotten by its session, and messages
// about it are ignored.
type coState uint8

const (
	coHeld coState = iota
	coClosing
	coReleased
	coEnded
)

// checkout is one granted checkout. Its state is guarded by mu; calls on it come from the
// session's reader (client messages) and the worker's goroutines (answers, exit).
type checkout struct {
	ss        *session
	co        uint64
	lease     *pool.Lease
	w         *worker.Worker
	keep      bool   // KeepWorkerAfterError: an err does not retire the worker
	max       int    // retire the worker once it has served max checkouts (0: no limit)
	pipelined bool   // the worker applies the ep rule itself
	once      bool   // one-shot: never granted; messages answer request req
	warm      bool   // a warm lease (warm.go): direct, kept by the client between its one-shot calls
	req       uint64 // the checkout request's id
	im        *ifaceMetrics
	iface     string
	watch     *watch    // the interface's checkout_warn_after and slow_call (holders.go)
	granted   time.Time // for the metrics, the checkouts report and checkout_warn_after

	mu    sync.Mutex
	state coState
	sent  map[uint64]*pendingCall // sent to the worker and not answered, by client call id
	queue []*pendingCall          // not pipelined: waiting for the call in sent
	errs  uint64                  // "err" replies so far (compared with each call's ep)
	// doneOwed: closing, and "done" not written yet because calls were still queued in
	// taskd (it follows the last of them, or the last answer if they were all aborted).
	doneOwed bool
	// slot is the record of one call, reused from call to call (see newCallLocked).
	slot     pendingCall
	slotBusy bool
	calls    uint64 // calls made on it, for the checkouts report
	warned   bool   // logged as held longer than checkout_warn_after
	// direct: granted as a direct lease (lid, the worker's lease number): its calls go
	// over a socketpair, and release, end and lost take the direct path (direct.go).
	direct bool
	lid    uint64
	// announced: the direct grant is in the session's send queue, so a reclaim sent now
	// reaches the client after it (warm.go). reclaimed: when taskd last asked the client
	// to give this warm lease back (zero: never).
	announced   bool
	reclaimed   time.Time
	warmCounted bool // a warm lease counted in Server.warmHeld
	// slowSeen: the start of the last call on the direct lease reported past slow_call.
	slowSeen time.Time
	counted  worker.LeaseEnd // the lease's calls already in taskd_calls_total (syncLeaseCalls)
}

// pendingCall is a call of a checkout. It receives its reply from the worker (OnReply).
type pendingCall struct {
	co     *checkout
	id     uint64 // the client's call id
	ep     uint64 // the checkout's error count as the application knew it
	method string
	args   json.RawMessage
	wid    uint64    // the worker's call id, once sent
	sentAt time.Time // when it was sent (or put first in line) to the worker: for its metrics
}

// callRef names a call for its answer once its record may be reused.
type callRef struct {
	id     uint64
	method string
	sentAt time.Time
}

// address fills in whom m is about: call id of this checkout, or, for a one-shot
// checkout (which the client never learns), the checkout request and the worker.
func (co *checkout) address(m *wire.ClientMsg, id uint64) *wire.ClientMsg {
	if co.once {
		m.ID = co.req
		m.Worker, m.PID = co.w.ID(), co.w.PID() // who ran it, for the caller's logs and errors
		m.Spare = co.lease.Spare()              // for a client's choice of daemon, as on granted
	} else {
		m.Co, m.ID = co.co, id
	}
	return m
}

// behindLocked is the ep rule: a call made before the application had been given the
// checkout's latest err reply (its ep is behind the count of errs) must not run. co.mu is
// held.
func (co *checkout) behindLocked(ep uint64) bool { return ep < co.errs }

// retireLocked decides whether the worker is retired rather than pooled when the checkout
// ends without a kill: asked by the client, an err without keep, or max checkouts served.
// (The pool adds its own reasons: bye, max_checkouts, an exited worker.) co.mu is held.
func (co *checkout) retireLocked(asked bool) bool {
	return asked || (co.errs > 0 && !co.keep) || (co.max > 0 && co.lease.Checkouts() >= co.max)
}

// call handles a call from the client.
func (co *checkout) call(id, ep uint64, method string, args json.RawMessage) {
	co.mu.Lock()
	if co.state != coHeld {
		co.mu.Unlock()
		return
	}
	if co.direct {
		co.mu.Unlock()
		co.refuseDirectCall(id)
		return
	}
	if co.behindLocked(ep) {
		co.mu.Unlock()
		co.im.observeCall(method, callAborted, time.Time{})
		co.abortCall(callRef{id: id, method: method})
		return
	}
	co.calls++
	pc := co.newCallLocked()
	*pc = pendingCall{co: co, id: id, ep: ep, method: method, args: args, sentAt: time.Now()}
	if !co.pipelined && len(co.sent) > 0 {
		pc.args = append(json.RawMessage(nil), args...) // args alias the reader's buffer
		co.queue = append(co.queue, pc)
		co.mu.Unlock()
		return
	}
	co.sent[pc.id] = pc
	co.mu.Unlock()
	co.start(pc)
}

// start sends pc to the worker. It is called without co.mu held, by one goroutine at a
// time per checkout (the session reader, or the worker's reader for queued calls).
func (co *checkout) start(pc *pendingCall) {
	co.lease.CountCall()
	wid, err := co.w.CallEp(pc.method, pc.args, pc.ep, pc)
	if err != nil {
		co.lost(err)
		return
	}
	co.mu.Lock()
	if co.sent[pc.id] == pc { // else answered already (and pc maybe reused)
		pc.wid = wid
	}
	co.mu.Unlock()
}

// newCallLocked returns the record for a new call: the checkout's own slot if it is free
// (one call at a time, the common case, allocates nothing), else a new one. co.mu is held.
func (co *checkout) newCallLocked() *pendingCall {
	if !co.slotBusy {
		co.slotBusy = true
		return &co.slot
	}
	return new(pendingCall)
}

// freeLocked gives back a call's record once nothing refers to it. co.mu is held.
func (co *checkout) freeLocked(pc *pendingCall) {
	if pc == &co.slot {
		co.slotBusy = false
	}
}

// OnReply passes the worker's reply to the checkout.
func (pc *pendingCall) OnReply(r worker.Reply) { pc.co.onReply(pc, r) }

func (co *checkout) onReply(pc *pendingCall, r worker.Reply) {
	if r.Err != nil {
		co.mu.Lock()
		// Calls of a checkout that had ended already were given up with it.
		o, method, sentAt := lostOutcome(r.Err, co.state == coEnded), pc.method, pc.sentAt
		co.mu.Unlock()
		co.im.observeCall(method, o, sentAt)
		co.lost(r.Err)
		return
	}
	co.mu.Lock()
	if co.state >= coReleased {
		co.mu.Unlock()
		return
	}
	delete(co.sent, pc.id)
	call := callRef{pc.id, pc.method, pc.sentAt}
	var slow time.Duration // how long the call ran, if longer than slow_call
	if sc := time.Duration(co.watch.slowCall.Load()); sc > 0 && !r.Aborted {
		if d := time.Since(pc.sentAt); d > sc {
			slow = d
		}
	}
	co.freeLocked(pc) // from here on pc may be reused by the next call
	if !r.OK && !r.Aborted {
		co.errs++
	}
	// Not pipelined: the next queued call to run; those made before the application
	// could know of an error are not run.
	var next *pendingCall
	var aborted []callRef
	for len(co.queue) > 0 && next == nil {
		c := co.queue[0]
		co.queue[0] = nil
		co.queue = co.queue[1:]
		if co.behindLocked(c.ep) {
			aborted = append(aborted, callRef{id: c.id, method: c.method})
			co.freeLocked(c)
		} else {
			next = c
			next.sentAt = time.Now()
			co.sent[c.id] = c
		}
	}
	closing := co.state == coClosing
	doneAfterNext := closing && co.doneOwed && next != nil && len(co.queue) == 0
	if doneAfterNext {
		co.doneOwed = false
	}
	// A one-shot checkout whose answer came before closeWhenAnswered ran (its call went out
	// early, with a write already under way) ends here, as a release would.
	early := co.once && co.state == coHeld && len(co.sent) == 0 && len(co.queue) == 0
	last := (closing && len(co.sent) == 0) || early
	retire, done := false, false
	if last {
		co.state = coReleased
		retire = co.retireLocked(false)
		done = !retire && (early || co.doneOwed) // not written yet
		co.doneOwed = false
	}
	co.mu.Unlock()

	if slow > 0 && co.watch.slowCall.Load() > 0 {
		co.logSlowCall(call.method, slow, r)
	}
	var m wire.ClientMsg
	switch {
	case r.Aborted:
		co.im.observeCall(call.method, callAborted, call.sentAt)
		co.abortCall(call)
	case r.OK:
		co.im.observeCall(call.method, callOK, call.sentAt)
		m = wire.ClientMsg{T: wire.TOK, R: r.Result, Logs: r.Logs}
		co.ss.send(co.address(&m, call.id))
	default:
		co.im.observeCall(call.method, callError, call.sentAt)
		m = wire.ClientMsg{T: wire.TErr, E: r.Error, Logs: r.Logs}
		co.ss.send(co.address(&m, call.id))
	}
	for _, a := range aborted {
		co.im.observeCall(a.method, callAborted, time.Time{})
		co.abortCall(a)
	}
	if next != nil {
		if doneAfterNext {
			co.w.Cork()
		}
		co.start(next)
		if doneAfterNext {
			co.writeDone()
			co.w.Uncork()
		}
	}
	if last {
		co.ss.forget(co)
		if done {
			co.writeDone()
		}
		co.giveBack(retire)
	}
}

// giveBack returns the checkout's worker to the pool (retired or not) and records how long
// the checkout held it.
func (co *checkout) giveBack(retire bool) {
	co.im.observeHold(co.granted)
	co.lease.Release(retire)
}

// abortCall answers a call that is not run because an earlier call of the checkout raised
// an error that the application had not seen when it made this one.
func (co *checkout) abortCall(c callRef) {
	m := wire.ClientMsg{T: wire.TFail, Code: wire.CodeAborted,
		Msg: fmt.Sprintf("call %q not run: an earlier call on this checkout raised an error before this one was made; calls made after seeing that error run normally", c.method)}
	co.ss.send(co.address(&m, c.id))
}

// cancel forwards the client's cancel of call id to the worker, if the worker has it.
func (co *checkout) cancel(id uint64) {
	co.mu.Lock()
	if co.direct { // a direct checkout's client cancels by abort (taskd cancels on control)
		co.mu.Unlock()
		return
	}
	var wid uint64
	if pc := co.sent[id]; pc != nil {
		wid = pc.wid
	}
	co.mu.Unlock()
	if wid != 0 {
		co.w.Cancel(wid)
	}
}

// writeDone tells the worker that its checkout is over. A worker that cannot be told is
// going away: its outstanding calls fail when it exits.
func (co *checkout) writeDone() {
	_ = co.w.Done()
}

// closeWhenAnswered ends the checkout once its outstanding calls are answered (held →
// closing), or at once if none is.
func (co *checkout) closeWhenAnswered() {
	co.mu.Lock()
	if co.state != coHeld {
		co.mu.Unlock()
		return
	}
	if len(co.sent) == 0 && len(co.queue) == 0 {
		co.mu.Unlock()
		co.release(false)
		return
	}
	co.state = coClosing
	co.doneOwed = len(co.queue) > 0 // then after the last queued call (onReply)
	doneNow := !co.doneOwed
	co.mu.Unlock()
	if doneNow {
		co.writeDone()
	}
}

// abandon ends a one-shot checkout whose caller gave up, and sends answer: before its call
// was sent the worker goes back to the pool untouched; after, it is interrupted, as for a
// held call given up (the call may be running, and nobody waits for it).
func (co *checkout) abandon(answer *wire.ClientMsg) {
	co.mu.Lock()
	if co.state == coHeld && len(co.sent) == 0 && len(co.queue) == 0 {
		co.state = coReleased
		co.mu.Unlock()
		co.ss.forget(co)
		co.ss.send(answer)
		co.giveBack(false)
		return
	}
	co.mu.Unlock()
	co.abort("one-shot call abandoned by its caller", answer)
}

// release ends the checkout for the client (release, or its connection closed). With
// calls still outstanding nobody waits for them: the worker is interrupted, as for an
// abort (cancel, cancel_grace, kill). Retiring it with an EOF at once would let a hung
// or spinning call burn CPU and hold its pool slot for the pool's stop grace (twice if
// it ignores SIGTERM), since a worker in the middle of a call does not read the EOF on
// its stdin.
func (co *checkout) release(retire bool) {
	co.mu.Lock()
	if co.direct {
		co.mu.Unlock()
		co.releaseDirect(retire)
		return
	}
	if co.state >= coReleased {
		co.mu.Unlock()
		return
	}
	if len(co.sent) > 0 || len(co.queue) > 0 {
		co.mu.Unlock()
		co.end(errors.New("checkout released with calls still outstanding"), nil)
		return
	}
	co.state = coReleased
	retire = co.retireLocked(retire)
	co.mu.Unlock()
	co.ss.forget(co)
	if !retire {
		co.writeDone()
	}
	co.giveBack(retire)
}

// abort ends the checkout for the client (abort, or a one-shot request abandoned while its
// call runs), interrupting its worker; answer, if not nil, is sent to the client once the
// checkout has ended.
func (co *checkout) abort(msg string, answer *wire.ClientMsg) {
	if msg == "" {
		msg = "no reason given"
	}
	co.end(fmt.Errorf("checkout aborted by the client: %s", msg), answer)
}

// lost ends the checkout because its worker died, is being killed, or had its calls
// interrupted (call_timeout); the client is told.
func (co *checkout) lost(err error) {
	m := wire.ClientMsg{T: wire.TLost, Code: lostCode(err), Msg: err.Error()}
	co.address(&m, 0)
	co.end(err, &m)
}

// end moves the checkout to ended (from any state but a final one) and forgets it;
// interrupts the worker for cause (a worker already interrupted, killed or gone is only
// waited for); sends answer (if not nil); and gives the lease back retired once the
// worker has settled. It does nothing if the checkout had ended already.
func (co *checkout) end(cause error, answer *wire.ClientMsg) {
	co.mu.Lock()
	if co.state >= coReleased {
		co.mu.Unlock()
		return
	}
	co.state = coEnded
	co.queue, co.sent = nil, nil
	direct := co.direct
	co.mu.Unlock()
	co.ss.forget(co)
	if answer != nil {
		co.ss.send(answer)
	}
	if direct {
		co.endDirect(cause)
		return
	}
	// The interrupt answers the calls it cancels at once; they find the checkout ended.
	// A kill comes before the pool retires the worker, so that cause is the one reported.
	co.w.Interrupt(cause, co.retire)
}

// retire gives the lease of an ended checkout back, retired: the worker has settled.
func (co *checkout) retire() { co.giveBack(true) }

// lostOutcome is the outcome of a call answered with err (no answer from the worker):
// ended says the checkout had ended before, so the call was given up with it.
func lostOutcome(err error, ended bool) callOutcome {
	switch {
	case ended:
		return callAborted
	case errors.Is(err, worker.ErrCallTimeout):
		return callTimeout
	}
	return callLost
}

// lostCode maps why a worker ended to the client protocol's code.
func lostCode(err error) string {
	switch {
	case errors.Is(err, worker.ErrCallTimeout):
		return wire.CodeCallTimeout
	case errors.Is(err, wire.ErrProtocol):
		return wire.CodeProtocol
	}
	return wire.CodeWorkerLost
}
