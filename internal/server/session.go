package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/fdio"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/sendq"
	"github.com/taskd-dev/taskd/internal/wire"
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
	peer Peer            // who is at the other end, as the kernel or network says
	ctx  context.Context // cancelled when the session ends: abandons waiting checkouts
	stop context.CancelFunc

	out      *sendq.Queue   // owns writes to conn
	acquires sync.WaitGroup // acquire goroutines, and a reload's

	// checkouts (co → *checkout) and onceReqs (one-shot checkouts by request id, for
	// abandon) are stored under mu, together with the check of ended, and read and
	// deleted without it: a call finds its checkout, and a checkout that ends forgets
	// itself, without a lock that every checkout of the connection shares.
	checkouts sync.Map
	onceReqs  sync.Map

	mu      sync.Mutex
	waiting map[uint64]context.CancelFunc // request id → abandon: a waiting checkout, a logs follow
	ended   bool
	name    string // given by the client in its hello (holders.go)
	named   bool   // a hello came

	client bool // an accepted connection (not the health check's): held to hello_timeout; set before serve
}

func newSession(s *Server, conn net.Conn, id uint64) *session {
	ctx, stop := context.WithCancel(context.Background())
	peer := peerOf(conn)
	log := s.log.With(append([]zap.Field{zap.Uint64("session", id)}, peer.fields()...)...)
	return &session{
		s: s, conn: conn, ctx: ctx, stop: stop, peer: peer,
		// A write error, or a client that lets replies pile up unread, closes conn: the
		// reader then ends the session.
		out: sendq.New(conn, func(err error) {
			if errors.Is(err, sendq.ErrBacklog) {
				log.Warn("client does not read its replies; closing its connection", zap.Error(err))
			}
		}).WithLimit(sendq.BacklogFor(int(s.cfg.MaxMessageBytes))),
		log:     log,
		waiting: make(map[uint64]context.CancelFunc),
	}
}

// serve reads requests until the connection ends, then releases everything the
// connection held and waits for the session's goroutines.
func (ss *session) serve() {
	ss.readLoop()

	ss.mu.Lock()
	ss.ended = true
	ss.mu.Unlock()
	cos := ss.held() // none is added once ended is set
	ss.stop()        // abandon waiting checkouts
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

// shutdownFlushWait is flushWait when taskd shuts down: what is left to send then is the
// end of the checkouts (lost notices), and a client that does not read must not hold up
// the exit for long, since under socket activation the next taskd waits for it.
const shutdownFlushWait = time.Second

func (ss *session) readLoop() {
	// Strict: a request cut short by the connection's end is not acted on (its client may
	// send it again on its next connection, knowing it never reached taskd whole).
	// A line longer than the read buffer takes its memory from max_line_memory, shared by
	// all sessions; a line too long, or one the budget has no room for, is refused as
	// soon as that is known, without reading the rest of it, and ends the session.
	lr := wire.NewLineReader(fdio.NewReader(ss.conn), int(ss.s.cfg.MaxMessageBytes)).Strict().WithBudget(ss.s.lines)
	defer lr.Release()
	// A client must send its first request within hello_timeout (access.go).
	waitHello := false
	if dl := ss.s.helloDeadline(); ss.client && !dl.IsZero() {
		waitHello = ss.conn.SetReadDeadline(dl) == nil
	}
	for {
		line, err := lr.ReadLine()
		if waitHello && err == nil {
			waitHello = false
			err = ss.conn.SetReadDeadline(time.Time{})
		}
		if err != nil {
			switch {
			case waitHello && errors.Is(err, os.ErrDeadlineExceeded):
				ss.helloTimedOut()
			case errors.Is(err, wire.ErrLineTooLong):
				ss.fatal(err.Error() + "; send less in one message, or raise taskd's max_message_bytes")
			case errors.Is(err, wire.ErrLineMemory):
				ss.log.Warn("no memory left for a client's long line (max_line_memory is in use); closing its connection",
					zap.Int64("max_line_memory", ss.s.lines.Limit()))
				ss.send(&wire.ClientMsg{T: wire.TFatal, Msg: fmt.Sprintf("taskd is short of memory for long lines: "+
					"the %d bytes that all connections share for lines over %d bytes (max_line_memory) are in use; "+
					"connect again and retry, or raise max_line_memory", ss.s.lines.Limit(), wire.ReadBufferSize)})
			case errors.Is(err, io.ErrUnexpectedEOF):
				ss.log.Info("client connection ended in the middle of a message; that message was dropped")
			}
			return
		}
		msg, err := wire.DecodeClientMsg(line)
		if err != nil {
			if errors.Is(err, wire.ErrInvalidUTF8) && ss.refuseNotUTF8(&msg, err) {
				continue
			}
			if errors.Is(err, wire.ErrNotObject) {
				err = fmt.Errorf("expected a JSON object per line, got %s", wire.Snippet(line))
			}
			ss.fatal(err.Error())
			return
		}
		ss.handle(&msg)
	}
}

// refuseNotUTF8 answers a call or a checkout request whose line is not valid UTF-8: the
// call fails, the request is refused (code invalid_utf8), and the connection and the
// checkout go on. It returns false for other messages, which are a protocol error.
func (ss *session) refuseNotUTF8(m *wire.ClientMsg, err error) bool {
	switch {
	case m.T == wire.TCall && m.Co != 0 && m.ID != 0:
		ss.send(&wire.ClientMsg{T: wire.TFail, Co: m.Co, ID: m.ID, Code: wire.CodeInvalidUTF8,
			Msg: fmt.Sprintf("call %d was not run: %v", m.ID, err)})
	case m.T == wire.TCheckout && m.ID != 0:
		ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeInvalidUTF8,
			Msg: fmt.Sprintf("checkout request %d refused: %v", m.ID, err)})
	default:
		return false
	}
	ss.log.Info("refused a request that is not valid UTF-8", zap.String("t", m.T), zap.Error(err))
	return true
}

func (ss *session) fatal(msg string) {
	ss.log.Warn("client broke the protocol; closing its connection", zap.String("error", msg), zap.String("client", ss.clientName()))
	ss.send(&wire.ClientMsg{T: wire.TFatal, Msg: msg})
}

func (ss *session) handle(m *wire.ClientMsg) {
	switch m.T {
	case wire.TCheckout:
		ss.checkout(m)
	case wire.TAbandon:
		ss.abandon(m.ID)
	case wire.TCall, wire.TCancel, wire.TRelease, wire.TAbort:
		co := ss.lookup(m.Co)
		if co == nil {
			if m.T == wire.TCall {
				ss.send(&wire.ClientMsg{T: wire.TFail, Co: m.Co, ID: m.ID, Code: wire.CodeUnknownCheckout,
					Msg: fmt.Sprintf("checkout %d is not held by this connection (released, lost or never granted)", m.Co)})
			}
			return
		}
		switch m.T {
		case wire.TCall:
			co.call(m.ID, m.Ep, m.M, m.A)
		case wire.TCancel:
			co.cancel(m.ID)
		case wire.TRelease:
			co.release(m.Retire)
		case wire.TAbort:
			co.abort(m.Msg, nil)
		}
	case wire.TPing:
		ss.send(&wire.ClientMsg{T: wire.TPong, ID: m.ID, Version: ss.s.version, Draining: ss.s.stopping.Load()})
	case wire.TStatus:
		st := ss.s.status()
		ss.filterStatus(st) // hide_forbidden
		ss.send(&wire.ClientMsg{T: wire.TStatus, ID: m.ID, Status: st})
	case wire.TReload:
		if !ss.refuseNotAdmin(m) {
			ss.reload(m.ID)
		}
	case wire.TLogs:
		ss.logs(m)
	case wire.TAdmin:
		ss.admin(m) // admin.go
	case wire.THello:
		ss.hello(m.Name)
	case wire.TCheckouts:
		ss.listCheckouts(m)
	default:
		if panicHook != nil {
			panicHook(m.T)
		}
		// A request (it has an id) of a type this taskd does not know is answered, so
		// that its client does not wait for nothing; other messages are ignored, for
		// forward compatibility.
		if m.ID != 0 {
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeInvalidRequest,
				Msg: fmt.Sprintf("unknown request type %q: this taskd (%s) does not know it; the client is newer than taskd, or broken", m.T, ss.s.version)})
		}
	}
}

// panicHook, when set (only in a build with the taskd_panichook tag, for tests), is called
// with the type of each client message of a type taskd does not know.
var panicHook func(t string)

// reload handles a reload request on a goroutine of the session's (a reload waits for new
// workers to start), and answers with the report, or refuses with why nothing changed.
func (ss *session) reload(id uint64) {
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	ss.acquires.Add(1)
	ss.mu.Unlock()
	go func() {
		defer ss.acquires.Done()
		defer crash.OnPanic(ss.log, "session reload")
		// Not the session's context: a client that hangs up does not undo a reload.
		rep, err := ss.s.Reload(context.Background())
		if err != nil {
			code, msg := wire.CodeUnavailable, err.Error()
			var invalid *InvalidConfigError
			switch {
			case errors.As(err, &invalid):
				code, msg = wire.CodeInvalidConfig, invalid.Err.Error() // the problems; the code says the rest
			case errors.Is(err, pool.ErrShuttingDown):
				code = wire.CodeShuttingDown
			}
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: id, Code: code, Msg: msg})
			return
		}
		ss.send(&wire.ClientMsg{T: wire.TReloaded, ID: id, Reload: rep})
	}()
}

// request is a checkout request, kept while it waits for a worker.
type request struct {
	id     uint64
	iface  string
	keep   bool
	max    int
	once   bool // one-shot: the request carries the call (method, args)
	direct bool // the client asked for a direct lease (direct.go)
	warm   bool // one-shot and direct: a warm lease instead, if the checkout can be direct (warm.go)
	method string
	args   json.RawMessage
	waited context.Context // set if it waited in the pool: done when it is abandoned
	asked  time.Time       // when it came, and its interface's metrics
	im     *ifaceMetrics
}

func (ss *session) checkout(m *wire.ClientMsg) {
	tab := ss.s.tab.Load()
	p := tab.pools[m.Iface]
	if p == nil {
		code, msg := wire.CodeUnknownInterface, fmt.Sprintf("unknown interface %q", m.Iface)
		if tab.removed[m.Iface] {
			code, msg = wire.CodeRemoved, (&RemovedError{Interface: m.Iface}).Error()
		}
		ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: code,
			Msg: fmt.Sprintf("%s; this daemon serves: %s", msg, ss.visibleNames(tab))})
		return
	}
	if ss.refuseForbidden(m, tab) { // allow: once per checkout request, one-shot or held
		return
	}
	req := request{id: m.ID, iface: m.Iface, keep: m.Keep, max: m.Max, once: m.Once, direct: m.Direct, warm: m.Once && m.Direct && m.Warm, method: m.M, args: m.A,
		asked: time.Now(), im: ss.s.metrics.iface(m.Iface)}
	// An idle worker is granted right here; otherwise a goroutine waits in the pool.
	if lease := p.TryAcquire(); lease != nil {
		ss.grant(lease, &req)
		return
	}
	ss.s.reclaimWarm(req.iface) // a warm lease kept by a client comes back for this one (warm.go)
	if req.once {
		req.args = append(json.RawMessage(nil), req.args...) // m aliases the reader's buffer
	}
	ctx, cancel := context.WithCancel(ss.ctx)
	req.waited = ctx
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		cancel()
		req.im.observeWait(waitAbandoned, req.asked)
		return
	}
	ss.waiting[req.id] = cancel
	ss.acquires.Add(1)
	ss.mu.Unlock()
	go func() {
		defer ss.acquires.Done()
		defer crash.OnPanic(ss.log, "session acquire")
		defer cancel()
		lease, err := p.Acquire(ctx)
		if err != nil {
			ss.mu.Lock()
			delete(ss.waiting, req.id)
			ss.mu.Unlock()
			code, msg := refusal(err, req.iface)
			req.im.observeWait(waitOutcomeOf(code), req.asked)
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: req.id, Code: code, Msg: msg})
			return
		}
		ss.grant(lease, &req)
	}()
}

// grant turns a request that got a worker into a checkout: a held one is announced to the
// client; a one-shot one runs its call at once, with the checkout closing when it is
// answered. A request abandoned meanwhile gives the worker back unused.
func (ss *session) grant(lease *pool.Lease, req *request) {
	w := lease.Worker()
	ss.mu.Lock()
	if req.waited != nil {
		delete(ss.waiting, req.id) // with the checkout's registration: no abandon in between
	}
	abandoned := req.waited != nil && req.waited.Err() != nil
	if ss.ended || abandoned {
		ss.mu.Unlock()
		lease.Release(false) // the worker did nothing
		req.im.observeWait(waitAbandoned, req.asked)
		if abandoned && !ss.ended {
			code, msg := refusal(context.Canceled, req.iface)
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: req.id, Code: code, Msg: msg})
		}
		return
	}
	// A one-shot request that asked for a warm lease gets one if the worker can take
	// a lease: it is granted as a held checkout, not run (warm.go).
	warm := req.warm && ss.wantsDirect(req, w)
	co := &checkout{ss: ss, co: ss.s.newCo(), lease: lease, w: w, keep: req.keep, max: req.max,
		pipelined: w.Pipelined(), once: req.once && !warm, warm: warm, req: req.id, sent: make(map[uint64]*pendingCall),
		im: req.im, iface: req.iface, watch: ss.s.watchOf(req.iface), granted: time.Now()}
	ss.checkouts.Store(co.co, co)
	if co.once {
		ss.onceReqs.Store(req.id, co)
	}
	ss.mu.Unlock()
	req.im.observeWait(waitGranted, req.asked)
	if !co.once && ss.wantsDirect(req, w) && ss.grantDirect(co, lease) {
		return
	}
	if !co.once {
		// Held; or warm, if the lease could not be made after all: then relayed, and the
		// client makes its call on it and releases it.
		ss.send(&wire.ClientMsg{T: wire.TGranted, ID: req.id, Co: co.co, Worker: w.ID(), PID: w.PID(), N: lease.Checkouts(), Warm: warm, Draining: ss.s.stopping.Load(), Spare: lease.Spare()})
		return
	}
	// The call and the done in one write to the worker: one wake-up instead of two.
	w.Cork()
	co.call(1, 0, req.method, req.args)
	co.closeWhenAnswered()
	w.Uncork()
}

// abandon handles the client giving up on checkout request id: a request still waiting
// is refused (code abandoned); a one-shot request whose call is running is refused the
// same way, at once, and its worker interrupted (cancel, cancel_grace, kill; see
// checkout.end). An id that is neither (answered already: the
// answer crossed the abandon) is ignored.
func (ss *session) abandon(id uint64) {
	ss.mu.Lock()
	cancel := ss.waiting[id]
	ss.mu.Unlock()
	var running *checkout
	if v, ok := ss.onceReqs.Load(id); ok {
		running = v.(*checkout)
	}
	switch {
	case cancel != nil:
		cancel() // the waiting goroutine answers
	case running != nil:
		running.abandon(&wire.ClientMsg{T: wire.TRefused, ID: id, Code: wire.CodeAbandoned,
			Msg: "checkout abandoned by the client; if its one-shot call had started, it was cancelled and its worker retired (killed if it did not stop within cancel_grace)"})
	}
}

// forget drops a checkout that has ended. It takes no lock of the session's.
func (ss *session) forget(co *checkout) {
	ss.checkouts.Delete(co.co)
	if co.once {
		ss.onceReqs.Delete(co.req)
	}
	if co.warm {
		co.mu.Lock()
		counted := co.warmCounted
		co.warmCounted = false
		co.mu.Unlock()
		if counted {
			ss.s.warmHeld.Add(-1)
		}
	}
}

// lookup returns the session's checkout co, or nil.
func (ss *session) lookup(co uint64) *checkout {
	if v, ok := ss.checkouts.Load(co); ok {
		return v.(*checkout)
	}
	return nil
}

func refusal(err error, iface string) (code, msg string) {
	switch {
	case errors.Is(err, pool.ErrOverloaded):
		return wire.CodeOverloaded, fmt.Sprintf("interface %q is overloaded: max_queue checkouts are already waiting; retry later or raise max_queue/max_workers", iface)
	case errors.Is(err, pool.ErrUnavailable):
		return wire.CodeUnavailable, err.Error()
	case errors.As(err, new(*DrainedError)):
		return wire.CodeDraining, err.Error() + "; held checkouts finish"
	case errors.As(err, new(*RemovedError)):
		return wire.CodeRemoved, err.Error() + "; its held checkouts finish, new ones are refused"
	case errors.Is(err, pool.ErrShuttingDown):
		return wire.CodeShuttingDown, "taskd is shutting down and accepts no new checkouts; retry against the restarted daemon"
	case errors.Is(err, context.Canceled):
		return wire.CodeAbandoned, "checkout abandoned by the client"
	}
	return wire.CodeUnavailable, err.Error()
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
func (ss *session) close() { ss.closeWithin(flushWait) }

// closeWithin is close with another bound on the flush.
func (ss *session) closeWithin(d time.Duration) {
	ss.out.CloseWithin(d)
}
