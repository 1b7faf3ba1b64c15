package server

import (
	"cmp"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Who holds what: the name a client gives itself (hello), the checkouts report, and the
// two alarms of an interface, checkout_warn_after and slow_call.
//
// Lock order: a session's mu, then its checkouts' mu. Server.mu is never held while a
// session's mu is taken: the session list is copied first.

// watch is one interface's checkout_warn_after and slow_call, and what they counted. It
// is kept by name for the daemon's lifetime (Server.watches), across reloads, so that
// the counters never go back; the settings are stored at start and by every reload and
// read without a lock, on the call path only when a call is sent and answered.
type watch struct {
	warnAfter   atomic.Int64 // checkout_warn_after (a time.Duration); 0: off
	slowCall    atomic.Int64 // slow_call (a time.Duration); 0: off
	heldTooLong atomic.Uint64
	slowCalls   atomic.Uint64
}

// watchOf returns interface name's watch.
func (s *Server) watchOf(name string) *watch {
	if w, ok := s.watches.Load(name); ok {
		return w.(*watch)
	}
	w, _ := s.watches.LoadOrStore(name, new(watch))
	return w.(*watch)
}

// setWatches stores the checkout_warn_after and slow_call of each interface of ifaces.
func (s *Server) setWatches(ifaces map[string]config.Interface) {
	for name, ic := range ifaces {
		w := s.watchOf(name)
		w.warnAfter.Store(int64(ic.CheckoutWarnAfter))
		w.slowCall.Store(int64(ic.SlowCall))
	}
}

// watchCounts returns what interface name's alarms counted, for the status.
func (s *Server) watchCounts(name string) (heldTooLong, slowCalls uint64) {
	w := s.watchOf(name)
	return w.heldTooLong.Load(), w.slowCalls.Load()
}

// hello keeps the name the client gives itself. Only the first hello of a connection
// counts: the name identifies the connection in logs, and a name that changed half-way
// would make them lie about what came before.
func (ss *session) hello(name string) {
	ss.mu.Lock()
	first := !ss.named
	if first {
		ss.named, ss.name = true, name
	}
	ss.mu.Unlock()
	if first {
		ss.log.Debug("client said hello", zap.String("client", name))
	}
}

// clientName returns the name the client gave in its hello ("" if none).
func (ss *session) clientName() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.name
}

// holder describes the session's client for the checkouts report.
func (ss *session) holder() wire.Holder {
	return wire.Holder{Name: ss.clientName(), PID: ss.peer.PID, UID: ss.peer.UID, GID: ss.peer.GID,
		Comm: ss.peer.Comm, Addr: ss.peer.Addr, TLSNames: ss.peer.TLSNames}
}

// held returns the session's checkouts.
func (ss *session) held() []*checkout {
	var cos []*checkout
	ss.checkouts.Range(func(_, v any) bool {
		cos = append(cos, v.(*checkout))
		return true
	})
	return cos
}

// allSessions returns the sessions being served.
func (s *Server) allSessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		list = append(list, ss)
	}
	return list
}

// checkouts answers a "checkouts" request: the checkouts held now, of interface iface
// ("": of all), by interface and checkout id. It is never nil, so that the answer
// carries the field.
func (s *Server) checkouts(iface string) []wire.CheckoutInfo {
	list := []wire.CheckoutInfo{}
	now := time.Now()
	for _, ss := range s.allSessions() {
		h := ss.holder()
		for _, co := range ss.held() {
			if iface != "" && co.iface != iface {
				continue
			}
			if ci, ok := co.info(h, now); ok {
				list = append(list, ci)
			}
		}
	}
	slices.SortFunc(list, func(a, b wire.CheckoutInfo) int {
		return cmp.Or(cmp.Compare(a.Interface, b.Interface), cmp.Compare(a.Co, b.Co))
	})
	return list
}

// known reports whether iface is served, or was removed and still finishes checkouts.
func (s *Server) known(iface string) bool {
	if s.tab.Load().pools[iface] != nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range s.removing {
		if name == iface {
			return true
		}
	}
	return false
}

// info describes the checkout, held by h, at now; false if it has ended.
func (co *checkout) info(h wire.Holder, now time.Time) (wire.CheckoutInfo, bool) {
	co.mu.Lock()
	calls, warned, state, direct := co.calls, co.warned, co.state, co.direct
	co.mu.Unlock()
	if state >= coReleased {
		return wire.CheckoutInfo{}, false
	}
	if direct {
		calls = co.leaseCalls() // counted by the worker, in its stats page
	}
	held := now.Sub(co.granted)
	wi := co.w.Info() // the worker is this checkout's alone: its call is this checkout's
	ci := wire.CheckoutInfo{Co: co.co, Interface: co.iface, Worker: wi.ID, PID: wi.PID, Holder: h,
		Once: co.once, Direct: direct, Warm: co.warm, HeldSec: held.Seconds(), Calls: calls, Method: wi.Method, Warn: warned}
	if !wi.CallStarted.IsZero() {
		ci.CallSec = now.Sub(wi.CallStarted).Seconds()
	}
	if wa := time.Duration(co.watch.warnAfter.Load()); wa > 0 && held > wa {
		ci.Warn = true
	}
	return ci, true
}

// Sweeps of held checkouts for checkout_warn_after: every sweepMax while no interface
// sets it; else four times within the shortest one set, but at most every sweepMin.
const (
	sweepMin = 10 * time.Millisecond
	sweepMax = time.Second
)

// watchHeld sweeps the held checkouts for checkout_warn_after until the shutdown begins.
// It runs on a goroutine of the server's (Server.wg): one for the daemon, not a timer
// per checkout.
func (s *Server) watchHeld() {
	defer s.wg.Done()
	defer crash.OnPanic(s.log, "checkout_warn_after")
	t := time.NewTimer(sweepMin)
	defer t.Stop()
	for {
		select {
		case <-s.halt.Done():
			return
		case <-t.C:
		}
		t.Reset(s.sweepHeld())
	}
}

// sweepHeld logs and counts, once each, the checkouts held longer than their interface's
// checkout_warn_after and the calls on direct leases running longer than slow_call,
// reclaims the warm leases whose pool wants their worker back
// (warm.go), and returns when to sweep next.
func (s *Server) sweepHeld() time.Duration {
	shortest := time.Duration(0)
	s.watches.Range(func(_, v any) bool {
		for _, d := range []int64{v.(*watch).warnAfter.Load(), v.(*watch).slowCall.Load()} {
			if d := time.Duration(d); d > 0 && (shortest == 0 || d < shortest) {
				shortest = d
			}
		}
		return true
	})
	warm := s.warmHeld.Load() > 0
	if shortest == 0 && !warm {
		return sweepMax
	}
	now := time.Now()
	for _, ss := range s.allSessions() {
		for _, co := range ss.held() {
			if !co.sweepWarm() { // a warm lease is held on purpose: never "too long"
				co.warnIfHeldTooLong(now)
			}
			co.watchDirectCall(now)
		}
	}
	next := sweepMax
	if shortest > 0 {
		next = min(max(shortest/4, sweepMin), sweepMax)
	}
	if warm {
		next = min(next, warmSweep)
	}
	return next
}

// warnIfHeldTooLong logs and counts the checkout if it has been held longer than
// checkout_warn_after and was not reported yet.
func (co *checkout) warnIfHeldTooLong(now time.Time) {
	wa := time.Duration(co.watch.warnAfter.Load())
	held := now.Sub(co.granted)
	if wa <= 0 || held <= wa {
		return
	}
	co.mu.Lock()
	report := !co.warned && co.state < coReleased
	co.warned = true
	calls := co.calls
	co.mu.Unlock()
	if !report {
		return
	}
	co.watch.heldTooLong.Add(1)
	wi := co.w.Info()
	fields := append(co.fields(wi), zap.Duration("held", held), zap.Duration("checkout_warn_after", wa),
		zap.Uint64("calls", calls))
	if !wi.CallStarted.IsZero() {
		fields = append(fields, zap.String("method", wi.Method), zap.Duration("call_running", now.Sub(wi.CallStarted)))
	}
	co.ss.log.Warn("checkout held longer than checkout_warn_after; its holder may have forgotten to release it", fields...)
}

// watchDirectCall logs and counts, once, a call on the checkout's direct lease that has
// run longer than slow_call. taskd does not see the answers of leased calls, so it reports
// such a call while it runs, when the sweep finds it (within a quarter of slow_call), with
// how long it had run then.
func (co *checkout) watchDirectCall(now time.Time) {
	sc := time.Duration(co.watch.slowCall.Load())
	if sc <= 0 {
		return
	}
	co.mu.Lock()
	direct, state := co.direct, co.state
	co.mu.Unlock()
	if !direct || state != coHeld {
		return
	}
	wi := co.w.Info() // from the stats page: the call running on the lease
	if wi.CallStarted.IsZero() || now.Sub(wi.CallStarted) <= sc {
		return
	}
	co.mu.Lock()
	seen := co.slowSeen.Equal(wi.CallStarted)
	co.slowSeen = wi.CallStarted
	co.mu.Unlock()
	if seen {
		return
	}
	co.watch.slowCalls.Add(1)
	fields := append(co.fields(wi), zap.String("method", wi.Method), zap.Duration("running", now.Sub(wi.CallStarted)),
		zap.Duration("slow_call", sc), zap.Bool("direct", true))
	co.ss.log.Warn("slow call, still running on a direct lease", fields...)
}

// logSlowCall logs and counts a call of the checkout that ran d, longer than slow_call.
func (co *checkout) logSlowCall(method string, d time.Duration, r worker.Reply) {
	co.watch.slowCalls.Add(1)
	outcome := "ok"
	if !r.OK {
		outcome = "err"
	}
	fields := append(co.fields(co.w.Info()), zap.String("method", method), zap.Duration("duration", d),
		zap.Duration("slow_call", time.Duration(co.watch.slowCall.Load())), zap.String("outcome", outcome))
	co.ss.log.Warn("slow call", fields...)
}

// fields are the log fields that say which checkout, worker and holder (the session's
// logger adds the peer).
func (co *checkout) fields(wi worker.Info) []zap.Field {
	return []zap.Field{zap.String("interface", co.iface), zap.Uint64("co", co.co), zap.String("worker", wi.ID),
		zap.Int("worker_pid", wi.PID), zap.String("client", co.ss.clientName())}
}

// listCheckouts answers a "checkouts" request. Like status it is read-only: any peer
// that may connect may ask.
func (ss *session) listCheckouts(m *wire.ClientMsg) {
	if m.Iface != "" && (!ss.s.known(m.Iface) || !ss.sees(m.Iface)) {
		tab := ss.s.tab.Load()
		ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeUnknownInterface,
			Msg: fmt.Sprintf("unknown interface %q; this daemon serves: %s", m.Iface, ss.visibleNames(tab))})
		return
	}
	ss.send(&wire.ClientMsg{T: wire.TCheckouts, ID: m.ID, Checkouts: ss.filterCheckouts(ss.s.checkouts(m.Iface))})
}

// watchCollector reports what checkout_warn_after and slow_call counted, per interface.
type watchCollector struct {
	s                      *Server
	heldTooLong, slowCalls *prometheus.Desc
}

func newWatchCollector(s *Server) *watchCollector {
	iface := []string{"interface"}
	return &watchCollector{s: s,
		heldTooLong: prometheus.NewDesc("taskd_checkouts_held_too_long_total",
			"Checkouts held longer than checkout_warn_after.", iface, nil),
		slowCalls: prometheus.NewDesc("taskd_slow_calls_total", "Calls that ran longer than slow_call.", iface, nil),
	}
}

func (c *watchCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.heldTooLong
	ch <- c.slowCalls
}

func (c *watchCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range c.s.tab.Load().names {
		held, slow := c.s.watchCounts(name)
		ch <- prometheus.MustNewConstMetric(c.heldTooLong, prometheus.CounterValue, float64(held), name)
		ch <- prometheus.MustNewConstMetric(c.slowCalls, prometheus.CounterValue, float64(slow), name)
	}
}
