package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Many daemons (Config.Addrs). A Client of several daemons keeps one backend per daemon:
// a Client of that one daemon, made by newOne as for Config.Addr, with its lanes, direct
// and warm leases, all unchanged. The Client's public methods delegate to multi, which
// picks a backend for each checkout and each one-shot call (balance.go) and calls it; a
// Checkout is the backend's, so its calls, Abort and Release go to the daemon that
// granted it (lease affinity). The backends differ from a Client of one daemon in one
// thing (inMulti): a checkout request that cannot be sent because the daemon cannot be
// reached, or that the daemon refuses as shutting down, fails at once (it was not acted
// on) instead of waiting for the daemon to come back, so that multi can try another.

// Bans: a daemon that could not be reached, refused a checkout as overloaded, drained
// or shutting down, or did not answer a ping while a request waited there (probe.go),
// gets no new checkouts for banMin, doubling with each failure up to
// banMax, plus up to half again of jitter; a checkout it serves lifts its ban.
const (
	banMin = 100 * time.Millisecond
	banMax = 5 * time.Second

	// multiDialTimeout bounds one dial of a backend: a daemon that does not answer within
	// it is treated as unreachable, and the checkout goes elsewhere.
	multiDialTimeout = 2 * time.Second

	// roundPause is the first pause before a checkout goes round the daemons again after
	// every one failed in a way that may pass (unreachable, shutting down); it doubles up
	// to roundPauseMax.
	roundPause    = 10 * time.Millisecond
	roundPauseMax = 250 * time.Millisecond
)

// ErrPerDaemon: the request (an admin request such as Drain, Reload or Checkouts, or
// Logs) is about one daemon, and the Client has several (Config.Addrs). Make a Client
// with Config.Addr set to that daemon's address for it.
var ErrPerDaemon = errors.New("client: request is for one daemon, and the client has several")

// multi is the part of a Client of several daemons that picks a daemon for each request.
// Safe for concurrent use.
type multi struct {
	cfg     Config // as given to New, with defaults applied
	addrs   string // Config.Addrs joined, for messages
	timeout time.Duration
	ctx     context.Context // cancelled by close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the resolver (resolve.go)
	res     *resolver      // nil without dns:// or dns+srv:// addresses
	slots   slots          // Config.MaxWorkers, for all daemons together

	// probeAfter and probeTimeout are the constants of the same names (probe.go); a test
	// may change them before the Client is used (probeAfter <= 0: no probes).
	probeAfter, probeTimeout time.Duration
	watches                  sync.Pool // *watch, of attempts that were not probed (probe.go)

	// waitCount and waitNanos are Stats.WaitCount and WaitDuration: one wait per request
	// (do), whichever daemons it tried.
	waitCount, waitNanos atomic.Int64

	// mu guards what follows and the ban state of every daemon. Nothing slow happens
	// under it, and no backend's lock is taken while it is held (lock order: a backend's
	// Client.mu is never held when mu is taken, and mu is never held when one is).
	mu      sync.Mutex
	closed  bool
	daemons []*daemon // in the order they were found
}

// daemon is one daemon of a multi, with its backend.
type daemon struct {
	addr string  // as dialled: "unix:/…", "tcp://ip:port", "tls://ip:port"
	from string  // the dns:// or dns+srv:// address it was found by; "" if listed
	c    *Client // the backend; owned by multi, closed by multi

	served atomic.Int64 // checkouts granted and one-shot calls answered
	errs   atomic.Int64 // checkouts and one-shot calls that failed here (not RemoteErrors)
	stalls atomic.Int64 // probes it did not answer (probe.go)
	pr     prober       // its probe state (probe.go)

	// Guarded by multi.mu.
	banUntil time.Time
	backoff  time.Duration // the last ban's length; 0 while not banned
	vanished bool          // no longer resolved: no new checkouts; closed once idle
}

// newMulti is New for several addresses.
func newMulti(cfg Config) (*Client, error) {
	seen := make(map[string]bool)
	var static []string
	var names []dnsTarget
	for i, a := range cfg.Addrs {
		if seen[a] {
			return nil, fmt.Errorf("client: Config.Addrs[%d] (%q) is listed twice: list each daemon once", i, a)
		}
		seen[a] = true
		if isDNSAddr(a) {
			t, err := parseDNSAddr(a)
			if err != nil {
				return nil, fmt.Errorf("client: Config.Addrs[%d]: %w", i, err)
			}
			names = append(names, t)
			continue
		}
		pa, err := wire.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("client: Config.Addrs[%d]: %w", i, err)
		}
		static = append(static, pa.String())
	}
	// Validate the rest of the Config once, as a Client of one daemon would.
	probe := cfg
	probe.Addrs = nil
	probe.Addr = "unix:/"
	if len(static) > 0 {
		probe.Addr = static[0]
	}
	p, err := newOne(probe)
	if err != nil {
		return nil, err
	}
	p.Close()

	m := &multi{cfg: cfg, addrs: strings.Join(cfg.Addrs, ","), probeAfter: probeAfter, probeTimeout: probeTimeout}
	m.slots.max = cfg.MaxWorkers
	switch {
	case cfg.Timeout == 0:
		m.timeout = DefaultTimeout
	case cfg.Timeout > 0:
		m.timeout = cfg.Timeout
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	for _, a := range static {
		d, err := m.newDaemon(a, "")
		if err != nil {
			m.close()
			return nil, err
		}
		m.daemons = append(m.daemons, d)
	}
	if len(names) > 0 {
		m.res = newResolver(m, names)
		m.wg.Add(1)
		go m.res.run()
	}
	c := &Client{cfg: cfg, multi: m, timeout: m.timeout}
	c.cfg.Addr = m.addrs
	c.ctx, c.cancel = m.ctx, m.cancel
	return c, nil
}

// newDaemon makes the backend of the daemon at addr; serverName, if set, is the name its
// TLS certificate must be valid for (the name resolved), unless Config.TLS says another.
func (m *multi) newDaemon(addr, serverName string) (*daemon, error) {
	cfg := m.cfg
	cfg.Addrs, cfg.Addr = nil, addr
	cfg.MaxWorkers = 0 // multi.slots caps them all together
	if serverName != "" && cfg.TLS != nil && cfg.TLS.ServerName == "" {
		cfg.TLS = cfg.TLS.Clone()
		cfg.TLS.ServerName = serverName
	}
	c, err := newOne(cfg)
	if err != nil {
		return nil, err
	}
	c.inMulti = true
	return &daemon{addr: c.cfg.Addr, c: c}, nil
}

// checkout is Client.Checkout on some daemon.
func (m *multi) checkout(ctx context.Context) (*Checkout, error) {
	var co *Checkout
	err := m.do(ctx, true, func(ctx context.Context, b *Client) error {
		var err error
		co, err = b.Checkout(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	co.onRelease = m.slots.release // the MaxWorkers slot goes with the checkout
	return co, nil
}

// dropWarm has every daemon give back an idle warm lease, for a checkout that waits for
// a MaxWorkers slot.
func (m *multi) dropWarm() {
	m.mu.Lock()
	ds := slices.Clone(m.daemons)
	m.mu.Unlock()
	for _, d := range ds {
		d.c.dropWarm()
	}
}

// do runs try (a checkout or a one-shot call) on a daemon picked for it, and on others
// while it fails in a way that says it was not acted on (failover), within ctx's deadline
// or Config.Timeout. Each daemon is tried at most once per round; a round in which every
// daemon failed in a way that may pass (unreachable, shutting down) is followed by
// another after a short pause, until the deadline; a round of refusals only
// (overloaded, drained) ends with the last refusal. An attempt that waits long is
// watched (probe.go): a checkout waiting on a daemon that does not answer a ping is
// abandoned there and tried on another, as on an unreachable one; a one-shot call is not.
//
// It takes a MaxWorkers slot first, and gives it back when it returns unless keep is set
// and it succeeded (a checkout: its Release gives it back).
func (m *multi) do(ctx context.Context, keep bool, try func(context.Context, *Client) error) (err error) {
	ctx, cancel := withTimeout(ctx, m.timeout)
	defer cancel()
	start := time.Now()
	defer func() {
		m.waitNanos.Add(int64(time.Since(start)))
		m.waitCount.Add(1)
	}()
	if err := m.slots.acquire(ctx, m.cfg.Interface, m.dropWarm); err != nil {
		return err
	}
	defer func() {
		if err != nil || !keep {
			m.slots.release()
		}
	}()
	var tried []*daemon
	var last error
	again := false
	var pause time.Duration
	for {
		d, err := m.pick(tried)
		if err != nil {
			return err
		}
		if d == nil {
			if last != nil && !again {
				return last
			}
			pause = min(max(2*pause, roundPause), roundPauseMax)
			t := time.NewTimer(pause)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return m.gaveUp(ctx.Err(), last)
			case <-m.ctx.Done():
				t.Stop()
				return (&Client{}).closedErr()
			}
			tried, again = tried[:0], false
			continue
		}
		tried = append(tried, d)
		err = m.attempt(ctx, d, keep, try) // try, with a probe if d is slow to answer (probe.go)
		if err == nil {
			m.servedBy(d)
			return nil
		}
		var re *RemoteError
		if !errors.As(err, &re) {
			d.errs.Add(1)
		}
		if errors.Is(err, ErrClosed) && m.ctx.Err() == nil {
			// A vanished daemon closed just after this checkout picked it (resolve.go):
			// nothing was sent, and pick skips it from now on.
			continue
		}
		if keep && errors.Is(err, errStalled) && ctx.Err() == nil {
			// A checkout abandoned on a daemon that did not answer a ping (probe.go),
			// which banned it: like an unreachable daemon, it may come back.
			last, again = err, true
			continue
		}
		if !failover(err) || ctx.Err() != nil {
			return err
		}
		m.ban(d)
		last = err
		if errors.Is(err, ErrUnreachable) || errors.Is(err, ErrShuttingDown) {
			again = true
			if m.res != nil {
				m.res.soon() // the daemon may have moved
			}
		}
	}
}

// failover reports whether a checkout or one-shot call that failed with err was not acted
// on by its daemon, and may be tried on another: the daemon could not be reached (the
// request was never written: see inMulti), or refused it before running anything.
func failover(err error) bool {
	return errors.Is(err, ErrUnreachable) || errors.Is(err, ErrOverloaded) ||
		errors.Is(err, ErrDraining) || errors.Is(err, ErrShuttingDown)
}

// gaveUp is the error of a request whose deadline passed (ctxErr) before any daemon
// served it; last is the last daemon's error, if one was tried.
func (m *multi) gaveUp(ctxErr, last error) error {
	if last == nil {
		var lastErr error
		if m.res != nil {
			lastErr = m.res.lastErr()
		}
		return &unreachableError{addr: m.addrs, last: lastErr, ctxErr: ctxErr, waiting: "no daemon found yet for " + fmt.Sprintf("%q", m.cfg.Interface)}
	}
	return &wrapped{
		text: fmt.Sprintf("%v before any daemon of %s took it; the last one tried said: %v", ctxErr, m.addrs, last),
		errs: []error{last, ctxErr},
	}
}

// ban keeps d from new checkouts for a while (see banMin).
func (m *multi) ban(d *daemon) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d.backoff = min(max(2*d.backoff, banMin), banMax)
	d.banUntil = time.Now().Add(d.backoff + rand.N(d.backoff/2+1))
}

// servedBy counts a success of d, which lifts its ban.
func (m *multi) servedBy(d *daemon) {
	d.served.Add(1)
	m.mu.Lock()
	d.backoff, d.banUntil = 0, time.Time{}
	m.mu.Unlock()
	if d.c.takeDraining() { // it granted, but said it is draining (balance.go)
		m.ban(d)
	}
}

// admin runs an admin request: Ping and DaemonStatus on the first daemon (in the order of
// Addrs, those not banned first) that answers; the others are per daemon.
func (m *multi) admin(ctx context.Context, op adminOp) (wire.ClientMsg, time.Duration, error) {
	if op.t != wire.TPing && op.t != wire.TStatus {
		what := op.t
		if op.req.Op != "" {
			what = op.req.Op
		}
		return wire.ClientMsg{}, 0, m.perDaemon(what)
	}
	ctx, cancel := withTimeout(ctx, op.timeout)
	defer cancel()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return wire.ClientMsg{}, 0, (&Client{}).closedErr()
	}
	now := time.Now()
	ds := slices.Clone(m.daemons)
	slices.SortStableFunc(ds, func(a, b *daemon) int {
		ab, bb := now.Before(a.banUntil), now.Before(b.banUntil)
		switch {
		case ab == bb:
			return 0
		case bb:
			return -1
		}
		return 1
	})
	m.mu.Unlock()
	var errs []error
	for _, d := range ds {
		msg, rtt, err := d.c.admin(ctx, op)
		if err == nil {
			return msg, rtt, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return wire.ClientMsg{}, 0, m.gaveUp(errors.New("no daemon found"), nil)
	}
	return wire.ClientMsg{}, 0, &wrapped{
		text: fmt.Sprintf("client: %s: no daemon of %s answered: %v", op.t, m.addrs, errors.Join(errs...)),
		errs: errs,
	}
}

func (m *multi) perDaemon(what string) error {
	return &wrapped{
		text: fmt.Sprintf("%v: %s is a request to one daemon, and this Client has the addresses %s: make a Client with Config.Addr set to the daemon's address for it", ErrPerDaemon, what, m.addrs),
		errs: []error{ErrPerDaemon},
	}
}

// close closes every backend and stops the resolver. Idempotent.
func (m *multi) close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.cancel()
	m.mu.Unlock()
	m.wg.Wait() // the resolver adds no daemon after this
	m.mu.Lock()
	ds := m.daemons
	m.mu.Unlock()
	for _, d := range ds {
		d.c.Close()
	}
	return nil
}
