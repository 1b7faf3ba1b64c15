package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// DefaultTimeout is the timeout used when Config.Timeout is 0 and the caller's context has
// no deadline (see Config.Timeout for what it bounds).
const DefaultTimeout = 30 * time.Second

// Client is a handle to one interface of one taskd daemon (of several with Config.Addrs:
// multi.go, which keeps a Client of one daemon per daemon). It owns its connections to
// taskd (up to Config.Conns): the first dialled when first needed and re-dialled (with a
// short, capped backoff) whenever it is lost while checkouts are waiting, more dialled
// while the load calls for them (lanes.go). A Client is safe for concurrent use by many goroutines;
// create one per interface and share it. Close it when done: it stops the goroutines it
// started.
type Client struct {
	cfg     Config // normalised copy
	addr    wire.Addr
	log     *zap.Logger
	timeout time.Duration // effective Timeout: > 0, or 0 for none

	ctx    context.Context // cancelled by Close; bounds dials
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the Client started
	timers sync.Pool      // *time.Timer for Config.Timeout (see timeoutTimer)

	// mu guards everything below, and the mutable state of every conn, Checkout and
	// Pending of this Client. Nothing slow happens under it: no blocking I/O (messages go
	// to the connection's send queue, which at most tries one non-blocking write), no
	// blocking channel operation, no logging.
	mu          sync.Mutex
	closed      bool
	lanes       []*lane      // Config.Conns of them; lane 0 first
	live        int          // lanes with a connection up
	rr          uint32       // the lane that took the last request (pickConnLocked)
	nextID      uint64       // request ids, unique for the Client's lifetime
	held        int          // checkouts holding a MaxWorkers slot (waiting for taskd or granted)
	slotQ       reqQueue     // checkouts waiting for a MaxWorkers slot, FIFO
	unsent      reqQueue     // checkouts waiting for a connection, FIFO; empty while conn != nil
	lastErr     error        // last dial or connection error
	dialWaiters []chan error // admin requests waiting for the outcome of the next dial
	stats       Stats        // returned by Stats, with the wait counters below

	warm warmSet // the warm leases kept idle (warm.go); its own lock

	// multi, if set, makes this the Client of several daemons (Config.Addrs): its public
	// methods delegate to multi's backends, which are Clients of one daemon each, with
	// inMulti set (multi.go). Both are set by New and never change.
	multi   *multi
	inMulti bool
	// drainSeen: taskd said on a grant that it is draining (balance.go, takeDraining).
	drainSeen atomic.Bool
	// spare: the spare workers the daemon reported on its last grant or one-shot answer,
	// and when (balance.go, noteSpare); kept only with inMulti.
	spare spareSeen

	// The wait counters of Stats, kept outside mu: a checkout updates them when its wait
	// ends without taking the lock again.
	waiting, waitCount, waitNanos atomic.Int64
}

// New validates cfg and returns a Client. It does not dial: the daemon need not be running
// yet, and checkouts wait for it (until their deadline) while the Client keeps trying.
func New(cfg Config) (*Client, error) {
	if len(cfg.Addrs) > 0 {
		if cfg.Addr != "" {
			return nil, fmt.Errorf("client: Config.Addr (%q) and Config.Addrs (%q) are both set: set Addrs only (Addr is the form for one daemon)", cfg.Addr, cfg.Addrs)
		}
		for i, a := range cfg.Addrs {
			if a == "" {
				return nil, fmt.Errorf("client: Config.Addrs[%d] is empty: give each daemon's address (unix:/path, tcp://host:port, tls://host:port, dns://name:port or dns+srv://_service._proto.name)", i)
			}
		}
		if len(cfg.Addrs) > 1 || isDNSAddr(cfg.Addrs[0]) {
			return newMulti(cfg)
		}
		cfg.Addr, cfg.Addrs = cfg.Addrs[0], nil
	}
	return newOne(cfg)
}

// newOne is New for a Client of one daemon (cfg.Addr).
func newOne(cfg Config) (*Client, error) {
	addrStr := cfg.Addr
	if addrStr == "" {
		addrStr = os.Getenv("TASKD_ADDR")
	}
	if addrStr == "" {
		addrStr = wire.DefaultAddr()
	}
	addr, err := wire.ParseAddr(addrStr)
	if err != nil {
		return nil, fmt.Errorf("client: Config.Addr: %w", err)
	}
	if cfg.MaxWorkers < 0 {
		return nil, fmt.Errorf("client: Config.MaxWorkers is %d: want 0 (no cap) or more", cfg.MaxWorkers)
	}
	if cfg.Direct != DirectAuto && cfg.Direct != DirectOff {
		return nil, fmt.Errorf("client: Config.Direct is %d: want DirectAuto or DirectOff", cfg.Direct)
	}
	if cfg.Conns < 0 {
		return nil, fmt.Errorf("client: Config.Conns is %d: want 0 (by GOMAXPROCS) or more", cfg.Conns)
	}
	if cfg.MaxCheckouts < 0 {
		return nil, fmt.Errorf("client: Config.MaxCheckouts is %d: want 0 (never retire) or more", cfg.MaxCheckouts)
	}
	c := &Client{
		cfg:  cfg,
		addr: addr,
		log:  cfg.Logger,
	}
	if c.cfg.Conns == 0 {
		c.cfg.Conns = defaultConns()
	}
	for i := range c.cfg.Conns {
		c.lanes = append(c.lanes, &lane{i: i, kick: make(chan struct{}, 1)})
	}
	c.cfg.Addr = addr.String()
	if c.cfg.Name == "" && len(os.Args) > 0 {
		c.cfg.Name = filepath.Base(os.Args[0])
	}
	if c.cfg.TLS != nil {
		c.cfg.TLS = c.cfg.TLS.Clone()
	} else if addr.TLS {
		c.cfg.TLS = &tls.Config{} // the system's roots, ServerName from the address
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	switch {
	case cfg.Timeout == 0:
		c.timeout = DefaultTimeout
	case cfg.Timeout > 0:
		c.timeout = cfg.Timeout
	}
	c.stats.MaxWorkers = cfg.MaxWorkers
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// withTimeout applies timeout (such as Config.Timeout; 0: none) to ctx if ctx has no
// deadline.
func withTimeout(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || timeout == 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}

// reqState is where a checkout request is.
type reqState uint8

const (
	reqSlot      reqState = iota // in slotQ, waiting for a MaxWorkers slot
	reqUnsent                    // in unsent, waiting for a connection
	reqSent                      // sent on conn, waiting for granted/refused
	reqAbandoned                 // sent, caller gone; a late grant is released at once
	reqParked                    // refused with shutting_down: waits for the next connection
	reqDone                      // answered: co or err is set, ready is closed
)

// coReq is one Checkout call in progress. It is kept small: thousands may be queued.
type coReq struct {
	id         uint64
	once       *onceCall // a one-shot call travelling with the request (Client.Call): answered, not granted
	state      reqState
	ready      chan struct{} // closed when state becomes reqDone
	co         *Checkout
	err        error
	cn         *conn // while reqSent, reqAbandoned or reqParked
	prev, next *coReq
}

// Checkout waits for an exclusive worker of Config.Interface and returns it. Waiting
// checkouts are served in the order Checkout was called: first by this Client (if
// MaxWorkers is set), then by taskd. A goroutine that already holds a checkout may call
// Checkout again; it waits its turn like everyone else.
//
// Checkout waits until ctx is done, or for Config.Timeout if ctx has no deadline. If taskd
// cannot be reached until then, the error matches ErrUnreachable and carries the last dial
// error; otherwise a deadline matches context.DeadlineExceeded. The caller must Release the
// returned Checkout.
func (c *Client) Checkout(ctx context.Context) (*Checkout, error) {
	if c.multi != nil {
		return c.multi.checkout(ctx)
	}
	return c.checkout(ctx, nil, time.Now())
}

// onceCall is the call of a one-shot checkout: sent with the checkout request and run by
// taskd on the worker it would have granted, which it then releases by itself. The
// request's answer is the call's.
type onceCall struct {
	method string
	args   json.RawMessage
	r      json.RawMessage // the result, once the request is answered ok
	rp     *[]byte         // r's pooled buffer (codec.go)
	mark   uint64          // the request's end in its connection's stream (sendq.AppendMark)
	warm   bool            // ask for a warm lease instead (Config.WarmFor, warm.go)
}

// checkout waits for a worker until ctx is done or, if ctx has no deadline, until
// Config.Timeout has passed since start. (A pooled timer, not context.WithTimeout: that
// costs allocations and a timer of its own on every call.)
func (c *Client) checkout(ctx context.Context, once *onceCall, start time.Time) (*Checkout, error) {
	if c.cfg.Interface == "" {
		return nil, &wrapped{
			text: "client: Config.Interface is empty: this Client can only Ping, DaemonStatus and Reload; create one with the interface to check out",
			errs: []error{ErrUnknownInterface},
		}
	}
	var timeout <-chan time.Time
	if t := c.timeoutTimer(ctx, start); t != nil {
		defer c.putTimer(t)
		timeout = t.C
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, c.closedErr()
	}
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return nil, c.checkoutCtxErr(err, "before it was sent")
	}
	c.nextID++
	req := &coReq{id: c.nextID, ready: make(chan struct{}), once: once}
	c.waiting.Add(1)
	var corked *conn
	slot := c.cfg.MaxWorkers > 0 && (c.held >= c.cfg.MaxWorkers || c.slotQ.len() > 0)
	if slot {
		req.state = reqSlot
		c.slotQ.push(req)
	} else {
		c.held++
		// The request is queued on its connection under the lock, so that its place in
		// the stream is known (see onceCall.mark), and written once the lock is
		// released: the write system call does not hold up the Client's other callers.
		if corked = c.pickConnLocked(); corked != nil {
			corked.out.Cork()
		}
		c.toConnLocked(req, corked)
		c.growLocked()
	}
	c.mu.Unlock()
	if corked != nil {
		corked.out.Uncork()
	}
	if slot {
		c.dropWarm() // an idle warm lease gives its slot up (warm.go)
	}

	var (
		co  *Checkout
		err error
	)
	select {
	case <-req.ready:
		co, err = req.co, req.err
	case <-ctx.Done():
		co, err = c.giveUp(ctx.Err(), req)
	case <-timeout:
		co, err = c.giveUp(context.DeadlineExceeded, req)
	}

	c.waitNanos.Add(int64(time.Since(start)))
	c.waitCount.Add(1)
	c.waiting.Add(-1)
	return co, err
}

// giveUp handles a Checkout that gave up (ctxErr: why) before it was answered.
func (c *Client) giveUp(ctxErr error, req *coReq) (*Checkout, error) {
	c.mu.Lock()
	switch req.state {
	case reqDone:
		co, err := req.co, req.err
		c.mu.Unlock()
		if req.once != nil && co == nil {
			return nil, err // answered just as the caller gave up: the answer counts
		}
		if co != nil {
			// Granted just as the caller gave up: give it back, as database/sql does.
			co.Release()
			return nil, c.checkoutCtxErr(ctxErr, "waiting for a worker")
		}
		return nil, err
	case reqSlot:
		c.slotQ.remove(req)
		req.state = reqDone
		c.mu.Unlock()
		return nil, c.checkoutCtxErr(ctxErr, fmt.Sprintf("waiting for one of the MaxWorkers=%d checkouts this client may hold (release checkouts sooner, or raise MaxWorkers)", c.cfg.MaxWorkers))
	case reqUnsent:
		c.unsent.remove(req)
		req.state = reqDone
		c.freeSlotLocked()
		err := &unreachableError{addr: c.cfg.Addr, last: c.lastErr, ctxErr: ctxErr, waiting: fmt.Sprintf("checkout of %q", c.cfg.Interface)}
		c.mu.Unlock()
		return nil, err
	case reqParked:
		delete(req.cn.reqs, req.id)
		req.state = reqDone
		c.freeSlotLocked()
		msg := req.cn.draining
		c.mu.Unlock()
		return nil, &wrapped{
			text: fmt.Sprintf("%v: checkout of %q: %v waiting for taskd to restart (taskd says %q); retry once it is back, or wait longer", ErrShuttingDown, c.cfg.Interface, ctxErr, msg),
			errs: []error{ErrShuttingDown, ctxErr},
		}
	default: // reqSent
		req.state = reqAbandoned
		c.sendLocked(req.cn, &wire.ClientMsg{T: wire.TAbandon, ID: req.id})
		c.freeSlotLocked()
		c.mu.Unlock()
		if req.once != nil {
			return nil, c.onceCtxErr(ctxErr, req)
		}
		return nil, c.checkoutCtxErr(ctxErr, "waiting for taskd to grant a worker (all its workers are busy: raise the interface's max_workers, release checkouts sooner, or wait longer)")
	}
}

func (c *Client) checkoutCtxErr(err error, while string) error {
	return fmt.Errorf("client: checkout of %q: %w %s", c.cfg.Interface, err, while)
}

// onceCtxErr is the error of a one-shot call given up after it was sent: it was waiting
// for a worker, or running (then taskd cancels it and retires its worker, as for a held
// call).
func (c *Client) onceCtxErr(err error, req *coReq) error {
	name := callName(c.cfg.Interface, req.once.method)
	what := "was cancelled"
	if errors.Is(err, context.DeadlineExceeded) {
		what = "passed its deadline"
	}
	return fmt.Errorf("client: call %s %s (%w) before it was answered; if it had started, taskd cancelled it and retires its worker, killing it if it does not stop within the interface's cancel_grace (give the call a longer deadline or Config.Timeout if it needs more time)", name, what, err)
}

func (c *Client) closedErr() error {
	return &wrapped{text: ErrClosed.Error() + ": create a new Client", errs: []error{ErrClosed}}
}

// toDaemonLocked moves a request that holds a slot to the daemon stage: sent now if a
// connection is up, else queued for the next one.
func (c *Client) toDaemonLocked(req *coReq) { c.toConnLocked(req, c.pickConnLocked()) }

// toConnLocked is toDaemonLocked with the connection chosen: cn, or nil if none is up.
func (c *Client) toConnLocked(req *coReq, cn *conn) {
	if cn != nil {
		c.sendCheckoutLocked(cn, req)
		return
	}
	req.state = reqUnsent
	c.unsent.push(req)
	c.wantConnLocked()
}

func (c *Client) sendCheckoutLocked(cn *conn, req *coReq) {
	if cn.draining != "" && c.inMulti {
		// Not sent: another daemon may take it (multi.go).
		failReqLocked(req, daemonError(fmt.Sprintf("checkout of %q", c.cfg.Interface), wire.CodeShuttingDown, cn.draining))
		c.freeSlotLocked()
		return
	}
	req.cn = cn
	cn.reqs[req.id] = req
	if cn.draining != "" {
		req.state = reqParked
		return
	}
	req.state = reqSent
	m := &wire.ClientMsg{T: wire.TCheckout, ID: req.id, Iface: c.cfg.Interface, Keep: c.cfg.KeepWorkerAfterError, Max: c.cfg.MaxCheckouts}
	if req.once == nil {
		m.Direct = c.wantDirect(cn)
		c.sendLocked(cn, m)
		return
	}
	m.Once, m.M, m.A = true, req.once.method, req.once.args
	if req.once.warm && c.wantDirect(cn) { // a warm lease instead, if the worker can take one (warm.go)
		m.Direct, m.Warm = true, true
	}
	if !cn.gone.Load() {
		// Where the request ends in the stream: if the connection breaks, it tells whether
		// the request reached taskd whole (then its call may have run).
		req.once.mark, _ = cn.out.AppendMark(func(b []byte) []byte {
			b, _ = wire.AppendClientMsg(b, m)
			return b
		})
	}
}

// freeSlotLocked gives up one MaxWorkers slot and hands it to the first waiter.
func (c *Client) freeSlotLocked() {
	c.held--
	if c.cfg.MaxWorkers == 0 || c.held >= c.cfg.MaxWorkers {
		return
	}
	if next := c.slotQ.pop(); next != nil {
		c.held++
		c.toDaemonLocked(next)
	}
}

// failReqLocked answers a waiting request with err. The caller handles its slot.
func failReqLocked(req *coReq, err error) {
	req.state = reqDone
	req.err = err
	req.cn = nil
	close(req.ready)
}

// Close closes the connections to taskd (which releases every checkout they hold), fails
// waiting checkouts and the calls of held checkouts with ErrClosed, and waits for the
// Client's goroutines to exit. Held checkouts should still be released (it is then a
// no-op). Close is idempotent and safe to call concurrently; it returns nil.
func (c *Client) Close() error {
	if c.multi != nil {
		return c.multi.close()
	}
	var ncs []net.Conn
	c.closeWarm() // warm.go: their releases go out before the connections close
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		c.cancel()
		err := c.closedErr()
		for r := c.slotQ.pop(); r != nil; r = c.slotQ.pop() {
			failReqLocked(r, err)
		}
		for r := c.unsent.pop(); r != nil; r = c.unsent.pop() {
			failReqLocked(r, err)
		}
		for _, ch := range c.dialWaiters {
			ch <- err // buffered
		}
		c.dialWaiters = nil
		for _, l := range c.lanes {
			if cn := l.cn; cn != nil {
				c.failConnLocked(cn, err, err, err)
				ncs = append(ncs, cn.nc)
			}
		}
	}
	c.mu.Unlock()
	for _, nc := range ncs {
		nc.Close() // ends the reader
	}
	c.wg.Wait()
	return nil
}

// Addr returns the address the Client dials, after defaults were applied (for messages);
// for a Client of several daemons, Config.Addrs joined with commas.
func (c *Client) Addr() string { return c.cfg.Addr }
