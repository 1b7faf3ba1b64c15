package client

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskd-dev/taskd/internal/lease"
	"github.com/taskd-dev/taskd/internal/sendq"
	"github.com/taskd-dev/taskd/internal/wire"
)

// Reconnect backoff: the first retry comes after backoffMin, doubling up to backoffMax.
// The cap is low so that checkouts queued while taskd is down are served within about
// 100ms of it coming up; the Client only dials while something is waiting for a
// connection, so an idle Client costs the daemon nothing.
const (
	backoffMin  = 5 * time.Millisecond
	backoffMax  = 100 * time.Millisecond
	dialTimeout = 5 * time.Second
	// stableConn is how long a connection must have lived for its loss to be redialled
	// at once rather than after a backoff delay.
	stableConn = time.Second
	// maxLine bounds a line from taskd. A reply relays a worker line (at most taskd's
	// max_message_bytes, which may be set up to wire.MaxMessageBytes) plus a small envelope.
	maxLine = wire.MaxMessageBytes + 64<<10
)

// conn is one connection to taskd (one lane of the Client's: lanes.go), with its reader
// goroutine (Client.read) and its send queue, which owns a writer goroutine for what the
// socket does not take at once. Its maps and flags are guarded by Client.mu, except cos
// and gone, which the per-call path reads without it; out has its own lock.
type conn struct {
	nc   net.Conn
	lane *lane
	out  *sendq.Queue  // owns writes to nc; Send and Append never block
	dead chan struct{} // closed when the reader has exited and the conn is cleaned up

	reqs  map[uint64]*coReq    // checkout requests sent and not answered
	admin map[uint64]*adminReq // admin requests (ping, status, reload) sent and not answered
	// cos holds the live checkouts granted on this connection (*Checkout by co): stored
	// under Client.mu, read and deleted without it (the reply path).
	cos  sync.Map
	gone atomic.Bool // failConnLocked has run; set under Client.mu
	// draining is taskd's message once it refused a checkout with shutting_down: later
	// checkouts are not sent on this connection but parked until the next one, so that a
	// daemon restart is invisible to the application.
	draining  string
	fatal     string          // msg of a "fatal" message from taskd, if any
	fatalCode string          // its code: why taskd refused or closed the connection, if it said
	fds       *lease.FDReader // descriptors of direct grants (direct.go); the reader goroutine's
}

// sendLocked queues m on the connection. It never blocks: sendq writes at once if the
// socket takes it, else leaves it to its writer goroutine.
func (c *Client) sendLocked(cn *conn, m *wire.ClientMsg) {
	if cn != nil {
		cn.send(m)
	}
}

// send queues m on the connection unless it is gone. Like sendLocked it never blocks;
// it needs no lock.
func (cn *conn) send(m *wire.ClientMsg) {
	if cn.gone.Load() {
		return
	}
	cn.out.Append(func(b []byte) []byte {
		b, _ = wire.AppendClientMsg(b, m) // client messages have no raw payloads: always encodes
		return b
	})
}

// attach makes nc lane l's connection: starts its goroutines and sends the queued
// checkout requests, oldest first. It returns nil (and closes nc) if the Client is closed.
func (c *Client) attach(nc net.Conn, l *lane) *conn {
	cn := &conn{
		nc:    nc,
		lane:  l,
		out:   sendq.New(nc, nil), // a failed write closes nc, which ends the reader
		dead:  make(chan struct{}),
		reqs:  make(map[uint64]*coReq),
		admin: make(map[uint64]*adminReq),
	}
	c.setupFDs(cn) // before any request is sent: checkouts ask for a direct lease if it is set
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.out.Abort() // closes nc
		<-cn.out.Done()
		return nil
	}
	l.cn = cn
	c.live++
	c.sendLocked(cn, &wire.ClientMsg{T: wire.THello, Name: c.cfg.Name}) // first, before any request
	c.wg.Add(1)
	go c.read(cn)
	for r := c.unsent.pop(); r != nil; r = c.unsent.pop() {
		c.sendCheckoutLocked(cn, r)
	}
	for _, ch := range c.dialWaiters {
		ch <- nil // buffered
	}
	c.dialWaiters = nil
	c.growLocked()
	c.mu.Unlock()
	return cn
}

// read is the connection's reader: it dispatches every message from taskd and, when the
// connection ends, fails or re-queues everything bound to it.
func (c *Client) read(cn *conn) {
	defer c.wg.Done()
	lr := wire.NewLineReader(cn.reader(), maxLine)
	var err error
	for {
		var line []byte
		line, err = lr.ReadLine()
		if err != nil {
			break
		}
		var m wire.ClientMsg
		m, err = wire.DecodeClientMsg(line)
		if err != nil {
			err = &wrapped{
				text: fmt.Sprintf("%v: taskd sent %s: %v", ErrProtocol, wire.Snippet(line), err),
				errs: []error{ErrProtocol, err},
			}
			break
		}
		c.dispatch(cn, &m)
	}
	cn.out.Abort() // closes nc; the queue's writer goroutine ends
	<-cn.out.Done()
	cn.closeFDs()

	c.mu.Lock()
	if cn.unserved() {
		// Not a protocol error: taskd refused the connection (max_clients), or closed an
		// idle one; requests waiting for a connection are sent on the next.
		err = fmt.Errorf("taskd closed the connection (%s): %s", cn.fatalCode, cn.fatal)
	} else if cn.fatal != "" {
		err = &wrapped{
			text: fmt.Sprintf("%v: taskd closed the connection: %q", ErrProtocol, cn.fatal),
			errs: []error{ErrProtocol},
		}
	} else if errors.Is(err, io.EOF) {
		err = errors.New("taskd closed the connection")
	} else {
		err = c.tlsError(err) // a TLS 1.3 server refuses a client certificate after the dial
	}
	c.lastErr = err
	lost := &wrapped{
		text: fmt.Sprintf("%v: connection to taskd at %s lost (%v); taskd released the worker: release this checkout and check out again", ErrWorkerLost, c.cfg.Addr, err),
		errs: []error{ErrWorkerLost, err},
	}
	admin := &unreachableError{addr: c.cfg.Addr, last: fmt.Errorf("connection lost: %w", err)}
	c.failConnLocked(cn, lost, admin, err)
	c.mu.Unlock()
	close(cn.dead)
}

// checkout returns the live checkout co of this connection, or nil.
func (cn *conn) checkout(co uint64) *Checkout {
	if v, ok := cn.cos.Load(co); ok {
		return v.(*Checkout)
	}
	return nil
}

// unserved reports whether taskd closed cn saying that it acted on nothing sent on it: it
// refused the connection (max_clients), or closed it before a whole request came
// (hello_timeout). One-shot calls written on it are resent then: they cannot have run.
func (cn *conn) unserved() bool {
	return cn.fatalCode == wire.CodeTooManyClients || cn.fatalCode == wire.CodeHelloTimeout
}

// failConnLocked detaches cn: its held checkouts fail with lost, its admin requests with
// adminErr, and its unanswered checkout requests are queued for the next connection (or,
// after Close, failed with lost).
func (c *Client) failConnLocked(cn *conn, lost, adminErr, lostCause error) {
	if cn.gone.Load() {
		return
	}
	cn.gone.Store(true)
	cn.lane.cn = nil
	c.live--
	cn.cos.Range(func(_, v any) bool {
		v.(*Checkout).fail(lost, false)
		return true
	})
	cn.cos.Clear()
	for _, a := range cn.admin {
		a.err = adminErr
		close(a.done)
	}
	cn.admin = nil
	var resend, mayHaveRun []*coReq
	for _, r := range cn.reqs {
		switch {
		case r.state != reqSent && r.state != reqParked:
			// abandoned: taskd releases it with the connection
		case c.closed:
			failReqLocked(r, lost)
		case r.once != nil && r.state == reqSent && cn.out.Written(r.once.mark) && !cn.unserved():
			// It reached taskd, so its call may have run: sending it again could run it
			// twice. (One that was not written whole, or that taskd refused — parked —
			// was never acted on, and is resent.)
			mayHaveRun = append(mayHaveRun, r)
		default:
			resend = append(resend, r)
		}
	}
	cn.reqs = nil
	defer func() {
		for _, r := range mayHaveRun {
			failReqLocked(r, &wrapped{
				text: fmt.Sprintf("%v: connection to taskd at %s lost while one-shot call %s was outstanding (%v); it may or may not have run, and it was not resent: retry it only if it is safe to run twice", ErrWorkerLost, c.cfg.Addr, callName(c.cfg.Interface, r.once.method), lostCause),
				errs: []error{ErrWorkerLost, lostCause},
			})
			c.freeSlotLocked()
		}
	}()
	if len(resend) == 0 {
		return
	}
	// Requests from cn are older than any in unsent (unsent is empty while a conn is up,
	// and cn was one until now): they go first, in the order they were made: on another
	// live connection if there is one, else on the next.
	slices.SortFunc(resend, func(a, b *coReq) int { return cmp.Compare(a.id, b.id) })
	if other := c.pickConnLocked(); other != nil {
		for _, r := range resend {
			c.sendCheckoutLocked(other, r)
		}
		return
	}
	later := c.unsent
	c.unsent = reqQueue{}
	for _, r := range resend {
		r.state = reqUnsent
		r.cn = nil
		c.unsent.push(r)
	}
	for r := later.pop(); r != nil; r = later.pop() {
		c.unsent.push(r)
	}
	c.wantConnLocked()
}

// dispatch handles one message from taskd. It runs on the reader goroutine.
func (c *Client) dispatch(cn *conn, m *wire.ClientMsg) {
	switch m.T {
	case wire.TGranted:
		c.granted(cn, m)
	case wire.TReclaim:
		c.reclaim(cn, m.Co) // warm.go
	case wire.TRefused:
		c.refused(cn, m)
	case wire.TOK, wire.TErr, wire.TFail, wire.TLost:
		if m.Co == 0 {
			c.onceAnswer(cn, m) // ok, err or lost for a one-shot request
			return
		}
		if m.T != wire.TLost {
			c.reply(cn, m)
			return
		}
		if co := cn.checkout(m.Co); co != nil {
			co.fail(daemonError("checkout of "+co.describe(), m.Code, m.Msg), false)
		}
	case wire.TPong, wire.TStatus, wire.TReloaded, wire.TAdminOK, wire.TCheckouts: // answers to admin requests
		c.mu.Lock()
		if a := cn.admin[m.ID]; a != nil {
			delete(cn.admin, m.ID)
			a.msg = *m
			close(a.done)
		}
		c.mu.Unlock()
	case wire.TFatal:
		c.mu.Lock()
		cn.fatal, cn.fatalCode = m.Msg, m.Code
		if cn.fatal == "" {
			cn.fatal = "(no message)"
		}
		c.mu.Unlock()
	}
	// Unknown types are ignored (forward compatibility).
}

func (c *Client) granted(cn *conn, m *wire.ClientMsg) {
	lf := cn.leaseFD(m) // a direct grant's socketpair end (direct.go); nil for a relayed one
	if c.inMulti {
		if m.Draining {
			c.drainSeen.Store(true) // no new checkouts there for a while (multi.go)
		}
		c.noteSpare(m.Spare)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	req := cn.reqs[m.ID]
	delete(cn.reqs, m.ID)
	warm := req != nil && req.once != nil && m.Warm // a one-shot request got a warm lease (warm.go)
	if req == nil || req.state != reqSent || (req.once != nil && !warm) || c.closed {
		lf.close()
		// Abandoned (or unknown): we own the checkout and give it straight back. The
		// worker did nothing for us, so it is pooled. (A one-shot request is never
		// granted; one that is failed below as a protocol error.)
		c.sendLocked(cn, &wire.ClientMsg{T: wire.TRelease, Co: m.Co})
		if req != nil && req.state == reqSent && req.once != nil {
			failReqLocked(req, &wrapped{
				text: fmt.Sprintf("%v: taskd granted one-shot request %d instead of answering it (a taskd older than this client?); the call may have run, and the checkout was released", ErrProtocol, m.ID),
				errs: []error{ErrProtocol}})
			c.freeSlotLocked()
		}
		return
	}
	co := &Checkout{
		c:    c,
		cn:   cn,
		id:   m.Co,
		info: WorkerInfo{ID: m.Worker, PID: m.PID},
		gone: make(chan struct{}),
		warm: warm,
	}
	if !c.pairLocked(cn, req, co, lf) {
		return
	}
	cn.cos.Store(m.Co, co)
	if warm {
		c.stats.WarmLeases++
	} else {
		c.stats.OpenCheckouts++
	}
	req.state = reqDone
	req.co = co
	req.cn = nil
	close(req.ready)
}

// onceAnswer handles the answer (ok, err or lost, without co) to a one-shot request. Like
// reply it emits the worker's logs outside the lock, before the caller is woken.
func (c *Client) onceAnswer(cn *conn, m *wire.ClientMsg) {
	var r json.RawMessage
	var rp *[]byte
	if m.T == wire.TOK {
		r, rp = copyResult(m.R) // m aliases the reader's buffer
	}
	if c.inMulti && m.Worker != "" { // an answer from a worker, not a refusal
		c.noteSpare(m.Spare)
	}
	c.mu.Lock()
	req := cn.reqs[m.ID]
	if req == nil || req.once == nil {
		c.mu.Unlock()
		return
	}
	delete(cn.reqs, m.ID)
	if req.state != reqSent {
		c.mu.Unlock()
		return // abandoned: the answer crossed the abandon, and nobody waits for it
	}
	if m.T == wire.TOK && len(m.Logs) == 0 {
		// The common case, with nothing to do outside the lock: answered at once.
		req.once.r, req.once.rp = r, rp
		failReqLocked(req, nil)
		c.freeSlotLocked()
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()

	if len(m.Logs) > 0 {
		c.emitLogs(WorkerInfo{ID: m.Worker, PID: m.PID}, req.once.method, m.Logs)
	}
	err := c.answerErr(m, req.once.method)

	c.mu.Lock()
	defer c.mu.Unlock()
	if req.state != reqSent {
		return // given up meanwhile (giveUp answered the caller)
	}
	req.once.r, req.once.rp = r, rp
	failReqLocked(req, err) // answered: with err nil, the call succeeded
	c.freeSlotLocked()
}

func (c *Client) refused(cn *conn, m *wire.ClientMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a := cn.admin[m.ID]; a != nil {
		delete(cn.admin, m.ID)
		a.err = daemonError(a.t, m.Code, m.Msg)
		close(a.done)
		return
	}
	req := cn.reqs[m.ID]
	if req == nil {
		return
	}
	delete(cn.reqs, m.ID)
	if req.state != reqSent {
		return // abandoned: this is the "abandoned" answer
	}
	if m.Code == wire.CodeShuttingDown {
		// taskd is draining, probably to restart: wait for the next daemon (until the
		// checkout's deadline) instead of failing.
		cn.draining = m.Msg
		if cn.draining == "" {
			cn.draining = "shutting down"
		}
		if c.inMulti {
			// Refused, not run: another daemon may take it (multi.go).
			failReqLocked(req, daemonError(fmt.Sprintf("checkout of %q", c.cfg.Interface), m.Code, m.Msg))
			c.freeSlotLocked()
			return
		}
		req.state = reqParked
		cn.reqs[m.ID] = req
		return
	}
	failReqLocked(req, daemonError(fmt.Sprintf("checkout of %q", c.cfg.Interface), m.Code, m.Msg))
	c.freeSlotLocked()
}
