package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/fdio"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/sendq"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/internal/worker"
)

// session serves one client connection. Its reader goroutine (serve) decodes requests.
// Writes go through a send queue (out): written at once from whichever goroutine has the
// message, and left to the queue's writer goroutine only when the socket is full, so that
// replies produced on worker goroutines never block on a slow client. A checkout that
// finds no idle worker waits in the pool on a goroutine of its own (see acquires).
type session struct {
	s    *Server
	conn net.Conn
	log  *zap.Logger
	ctx  context.Context // cancelled when the session ends: abandons waiting checkouts
	stop context.CancelFunc

	out      *sendq.Queue // owns writes to conn
	acquires sync.WaitGroup

	mu        sync.Mutex
	checkouts map[uint64]*checkout
	waiting   map[uint64]context.CancelFunc // checkout request id → abandon
	ended     bool
}

func newSession(s *Server, conn net.Conn, id uint64) *session {
	ctx, stop := context.WithCancel(context.Background())
	log := s.log.With(zap.Uint64("session", id))
	return &session{
		s: s, conn: conn, ctx: ctx, stop: stop,
		// A write error, or a client that lets replies pile up unread, closes conn: the
		// reader then ends the session.
		out: sendq.New(conn, func(err error) {
			if errors.Is(err, sendq.ErrBacklog) {
				log.Warn("client does not read its replies; closing its connection", zap.Error(err))
			}
		}).WithLimit(sendq.BacklogFor(int(s.cfg.MaxMessageBytes))),
		log:       log,
		checkouts: make(map[uint64]*checkout),
		waiting:   make(map[uint64]context.CancelFunc),
	}
}

// serve reads requests until the connection ends, then releases everything the
// connection held and waits for the session's goroutines.
func (ss *session) serve() {
	ss.readLoop()

	ss.mu.Lock()
	ss.ended = true
	cos := make([]*checkout, 0, len(ss.checkouts))
	for _, co := range ss.checkouts {
		cos = append(cos, co)
	}
	ss.mu.Unlock()
	ss.stop() // abandon waiting checkouts
	for _, co := range cos {
		co.release(false)
	}
	ss.acquires.Wait()
	ss.close()
	<-ss.out.Done()
	ss.conn.Close()
}

// flushWait bounds how long a closing session waits for its client to read what is
// queued; after that the connection is closed anyway.
const flushWait = 5 * time.Second

func (ss *session) readLoop() {
	lr := wire.NewLineReader(fdio.NewReader(ss.conn), int(ss.s.cfg.MaxMessageBytes))
	for {
		line, err := lr.ReadLine()
		if err != nil {
			if errors.Is(err, wire.ErrLineTooLong) {
				ss.fatal(err.Error())
			}
			return
		}
		msg, err := wire.DecodeClientMsg(line)
		if err != nil {
			if errors.Is(err, wire.ErrNotObject) {
				err = fmt.Errorf("expected a JSON object per line, got %s", wire.Snippet(line))
			}
			ss.fatal(err.Error())
			return
		}
		ss.handle(&msg)
	}
}

func (ss *session) fatal(msg string) {
	ss.log.Warn("client broke the protocol; closing its connection", zap.String("error", msg))
	ss.send(&wire.ClientMsg{T: wire.TFatal, Msg: msg})
}

func (ss *session) handle(m *wire.ClientMsg) {
	switch m.T {
	case wire.TCheckout:
		ss.checkout(m)
	case wire.TAbandon:
		ss.mu.Lock()
		cancel := ss.waiting[m.ID]
		var granted *checkout // a one-shot checkout whose granted message is still held back
		if cancel == nil {
			for _, co := range ss.checkouts {
				if co.once && co.req == m.ID {
					granted = co
					break
				}
			}
		}
		ss.mu.Unlock()
		switch {
		case cancel != nil:
			cancel()
		case granted != nil:
			// The client must learn the checkout it owns, to release it (which kills the
			// worker if the call is still running), as if the grant had crossed the abandon.
			granted.send(nil)
		}
	case wire.TCall, wire.TCancel, wire.TRelease, wire.TAbort:
		ss.mu.Lock()
		co := ss.checkouts[m.Co]
		ss.mu.Unlock()
		if co == nil {
			if m.T == wire.TCall {
				ss.send(&wire.ClientMsg{T: wire.TFail, Co: m.Co, ID: m.ID, Code: wire.CodeUnknownCheckout,
					Msg: fmt.Sprintf("checkout %d is not held by this connection (released, lost or never granted)", m.Co)})
			}
			return
		}
		switch m.T {
		case wire.TCall:
			co.enqueue(m.ID, m.Ep, m.M, m.A)
		case wire.TCancel:
			co.cancel(m.ID)
		case wire.TRelease:
			co.release(m.Retire)
		case wire.TAbort:
			co.abort(m.Msg)
		}
	case wire.TPing:
		ss.send(&wire.ClientMsg{T: wire.TPong, ID: m.ID, Version: ss.s.version})
	case wire.TStatus:
		ss.send(&wire.ClientMsg{T: wire.TStatus, ID: m.ID, Status: ss.s.status()})
	}
}

func (ss *session) checkout(m *wire.ClientMsg) {
	p := ss.s.pools[m.Iface]
	if p == nil {
		ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeUnknownInterface,
			Msg: fmt.Sprintf("unknown interface %q; this daemon serves: %s", m.Iface, strings.Join(ss.s.names, ", "))})
		return
	}
	id, iface, keep := m.ID, m.Iface, m.Keep
	once, method, maxN, args := m.Once, m.M, m.N, m.A
	grant := func(lease *pool.Lease) {
		ss.mu.Lock()
		if ss.ended {
			ss.mu.Unlock()
			lease.Release(false)
			return
		}
		w := lease.Worker()
		co := &checkout{ss: ss, co: ss.s.newCo(), lease: lease, w: w, keep: keep,
			pipelined: w.Pipelined(), sent: make(map[uint64]*pendingCall), once: once,
			retire: once && maxN > 0 && lease.Checkouts() >= maxN, req: id}
		g := &wire.ClientMsg{T: wire.TGranted, ID: id, Co: co.co, Worker: w.ID(), PID: w.PID(), N: lease.Checkouts()}
		if once {
			co.grant = g // sent with the call's answer: one write, one wake-up of the client
		}
		ss.checkouts[co.co] = co
		ss.mu.Unlock()
		if !once {
			ss.send(g)
			return
		}
		co.enqueue(1, 0, method, args)
	}
	// An idle worker is granted right here; otherwise a goroutine waits in the pool.
	if lease := p.TryAcquire(); lease != nil {
		grant(lease)
		return
	}
	if once {
		args = append(json.RawMessage(nil), args...) // m aliases the reader's buffer
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		cancel()
		return
	}
	ss.waiting[id] = cancel
	ss.acquires.Add(1)
	ss.mu.Unlock()
	go func() {
		defer ss.acquires.Done()
		defer cancel()
		lease, err := p.Acquire(ctx)
		ss.mu.Lock()
		delete(ss.waiting, id)
		ss.mu.Unlock()
		if err != nil {
			code, msg := refusal(err, iface)
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: id, Code: code, Msg: msg})
			return
		}
		grant(lease)
	}()
}

func refusal(err error, iface string) (code, msg string) {
	switch {
	case errors.Is(err, pool.ErrOverloaded):
		return wire.CodeOverloaded, fmt.Sprintf("interface %q is overloaded: max_queue checkouts are already waiting; retry later or raise max_queue/max_workers", iface)
	case errors.Is(err, pool.ErrUnavailable):
		return wire.CodeUnavailable, err.Error()
	case errors.Is(err, pool.ErrShuttingDown):
		return wire.CodeShuttingDown, "taskd is shutting down and accepts no new checkouts; retry against the restarted daemon"
	case errors.Is(err, context.Canceled):
		return wire.CodeAbandoned, "checkout abandoned by the client"
	}
	return wire.CodeUnavailable, err.Error()
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

// send queues messages (nil ones are skipped), in one write. It never blocks on the
// connection.
func (ss *session) send(ms ...*wire.ClientMsg) {
	var err error
	var bad *wire.ClientMsg
	ss.out.Append(func(b []byte) []byte {
		for _, m := range ms {
			if m == nil {
				continue
			}
			var merr error
			if b, merr = wire.AppendClientMsg(b, m); merr != nil && err == nil {
				err, bad = merr, m
			}
		}
		return b
	})
	if err != nil {
		ss.log.Error("cannot encode a reply; dropping it", zap.String("t", bad.T), zap.Error(err))
	}
	for _, m := range ms {
		if m != nil && m.T == wire.TFatal {
			ss.close()
		}
	}
}

// close flushes what is queued (for at most flushWait), then closes the connection (which
// ends the reader).
func (ss *session) close() {
	ss.out.CloseWithin(flushWait)
}

// checkout is one granted checkout. Its calls are answered in order. To a worker that
// pipelines, calls are sent as they come, each with its ep, and the worker skips those
// behind an error; to other workers taskd sends one call at a time and applies the ep
// rule itself to the calls it queued.
type checkout struct {
	ss        *session
	co        uint64
	lease     *pool.Lease
	w         *worker.Worker
	keep      bool
	pipelined bool
	once      bool   // one-shot: released by taskd once call 1 is answered
	retire    bool   // once: retire the worker at that release (the client's MaxCheckouts)
	req       uint64 // the checkout request's id

	mu    sync.Mutex
	sent  map[uint64]*pendingCall // sent to the worker and not answered, by client call id
	queue []*pendingCall          // not pipelined: waiting for the call in sent
	errs  uint64                  // "err" replies so far (compared with each call's ep)
	dead  bool                    // released, aborted or lost
	grant *wire.ClientMsg         // once: the "granted" not sent yet (see send)
	// slot is the record of one call, reused from call to call (see newCallLocked).
	slot     pendingCall
	slotBusy bool
}

// send sends m (which may be nil) about this checkout. A one-shot checkout's "granted"
// is held back until then, so that it and the call's answer go out in one write; co.mu
// keeps the two in order against a concurrent send.
func (co *checkout) send(m *wire.ClientMsg) {
	if !co.once {
		co.ss.send(m)
		return
	}
	co.mu.Lock()
	g := co.grant
	co.grant = nil
	co.ss.send(g, m)
	co.mu.Unlock()
}

// pendingCall is a call of a checkout. It receives its reply from the worker (OnReply).
type pendingCall struct {
	co     *checkout
	id     uint64 // the client's call id
	ep     uint64 // the checkout's error count as the application knew it
	method string
	args   json.RawMessage
	wid    uint64 // the worker's call id, once sent
}

func (co *checkout) enqueue(id, ep uint64, method string, args json.RawMessage) {
	co.mu.Lock()
	if co.dead {
		co.mu.Unlock()
		return
	}
	if ep < co.errs {
		co.mu.Unlock()
		co.abortCall(id, method)
		return
	}
	pc := co.newCallLocked()
	*pc = pendingCall{co: co, id: id, ep: ep, method: method, args: args}
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
	var wid uint64
	var err error
	wid, err = co.w.CallEp(pc.method, pc.args, pc.ep, pc)
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
		co.lost(r.Err)
		return
	}
	co.mu.Lock()
	if co.dead {
		co.mu.Unlock()
		return
	}
	delete(co.sent, pc.id)
	id, method := pc.id, pc.method
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
		if c.ep < co.errs {
			aborted = append(aborted, callRef{c.id, c.method})
			co.freeLocked(c)
		} else {
			next = c
			co.sent[c.id] = c
		}
	}
	co.mu.Unlock()

	switch {
	case r.Aborted:
		co.abortCall(id, method)
	case r.OK:
		co.send(&wire.ClientMsg{T: wire.TOK, Co: co.co, ID: id, R: r.Result, Logs: r.Logs})
	default:
		co.send(&wire.ClientMsg{T: wire.TErr, Co: co.co, ID: id, E: r.Error, Logs: r.Logs})
	}
	for _, a := range aborted {
		co.abortCall(a.id, a.method)
	}
	if next != nil {
		co.start(next)
	}
	if co.once {
		co.release(co.retire)
	}
}

// abortCall answers a call that is not run because an earlier call of the checkout raised
// an error that the application had not seen when it made this one.
func (co *checkout) abortCall(id uint64, method string) {
	co.send(&wire.ClientMsg{T: wire.TFail, Co: co.co, ID: id, Code: wire.CodeAborted,
		Msg: fmt.Sprintf("call %q not run: an earlier call on this checkout raised an error before this one was made; calls made after seeing that error run normally", method)})
}

// callRef names a call for its answer once its record may be reused.
type callRef struct {
	id     uint64
	method string
}

func (co *checkout) cancel(id uint64) {
	co.mu.Lock()
	var wid uint64
	if pc := co.sent[id]; pc != nil {
		wid = pc.wid
	}
	co.mu.Unlock()
	if wid != 0 {
		co.w.Cancel(wid)
	}
}

// finish marks the checkout dead and forgets it; it reports whether this call did so and
// whether calls were outstanding.
func (co *checkout) finish() (first, busy, hadErr bool) {
	co.mu.Lock()
	if co.dead {
		co.mu.Unlock()
		return false, false, false
	}
	co.dead = true
	busy = len(co.sent) > 0 || len(co.queue) > 0
	hadErr = co.errs > 0
	co.queue, co.sent = nil, nil
	co.mu.Unlock()
	co.ss.mu.Lock()
	delete(co.ss.checkouts, co.co)
	co.ss.mu.Unlock()
	return true, busy, hadErr
}

func (co *checkout) release(retire bool) {
	first, busy, hadErr := co.finish()
	if !first {
		return
	}
	if busy {
		// Nobody waits for the calls still outstanding: kill the worker now, as for an
		// abort. Retiring it gracefully would let a hung or spinning call burn CPU and hold
		// its pool slot for the pool's stop grace (twice if it ignores SIGTERM), since a
		// worker in the middle of a call does not read the EOF on its stdin.
		co.w.Kill(errors.New("checkout released with calls still outstanding"))
	}
	co.lease.Release(retire || busy || (hadErr && !co.keep))
}

func (co *checkout) abort(msg string) {
	if first, _, _ := co.finish(); !first {
		return
	}
	if msg == "" {
		msg = "no reason given"
	}
	co.w.Kill(fmt.Errorf("checkout aborted by the client: %s", msg))
	co.lease.Release(true)
}

func (co *checkout) lost(err error) {
	if first, _, _ := co.finish(); !first {
		return
	}
	co.send(&wire.ClientMsg{T: wire.TLost, Co: co.co, Code: lostCode(err), Msg: err.Error()})
	co.lease.Release(true)
}
