package server

import (
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/lease"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Direct leases (docs/worker-protocol.md, "Direct leases"). A held checkout whose request
// asked for one ("direct":true), on a unix-socket session, of a worker that announced
// leases (its interface's direct is on, so it was spawned for them), is granted directly:
// taskd makes a socketpair, hands the worker its end on the worker's control channel and
// the client the other with the grant line (SCM_RIGHTS, through the session's send
// queue), and is off the data path. The checkout is then one more flavour of the
// checkout state machine (checkout.go), with the same states:
//
//   - held: the client's calls go over the pair; taskd sees them only in the worker's
//     stats page (status, checkouts, call_timeout by the worker's scan of the page).
//   - released: the client released it with no call running: the worker gets "end" and
//     goes back to the pool once it answers "ended" (it closed its end and ran its done
//     hook), so no one else is handed the worker before that; or it is retired at once
//     (an err seen on the page without keep, max checkouts, retire asked).
//   - ended: the client aborted, or released (or lost its connection) with a call running
//     on the lease, or the worker was lost (it exited, or a call passed call_timeout):
//     the running call gets a cancel on control, the lease an "end", and the worker
//     cancel_grace to end it before it is killed; the lease goes back retired once the
//     worker has settled. The client sees EOF on its pair when the worker closes its end
//     or dies, and a lost message saying why when taskd knows.
//
// Fallback is silent: a request over TCP or TLS, or without "direct", or a worker that did
// not announce leases, or a failure to make the pair, gets a relay grant.

// directMethod is the method label of the calls made over direct leases in
// taskd_calls_total: taskd counts them from the stats page at each scrape and when the
// lease ends, and does not know their methods (nor their durations:
// taskd_call_duration_seconds has only relayed calls).
const directMethod = "(direct)"

// isUnix reports whether the session is on a unix socket (descriptors can ride on it).
func (ss *session) isUnix() bool {
	_, ok := ss.conn.(*net.UnixConn)
	return ok
}

// wantsDirect reports whether a checkout request may be granted directly on worker w.
func (ss *session) wantsDirect(req *request, w *worker.Worker) bool {
	return req.direct && (!req.once || req.warm) && ss.isUnix() && w.Pipelined() && w.LeaseCapable()
}

// grantDirect grants co directly: a pair, one end to the worker on control, the other to
// the client with the grant. It returns false (nothing sent, nothing changed) if that
// cannot be done, for the caller to grant by relay.
func (ss *session) grantDirect(co *checkout, pl *pool.Lease) bool {
	wEnd, cEnd, err := lease.Pair(unix.SOCK_STREAM)
	if err != nil {
		ss.log.Warn("cannot make a direct lease; relaying this checkout", zap.Error(err))
		return false
	}
	co.mu.Lock()
	co.direct = true
	co.mu.Unlock()
	lid, err := co.w.GrantLease(wEnd, co.directLost)
	wEnd.Close()
	if err != nil {
		cEnd.Close()
		co.mu.Lock()
		co.direct = false
		co.mu.Unlock()
		ss.log.Debug("worker took no direct lease; relaying this checkout", zap.Error(err))
		return false
	}
	co.mu.Lock()
	co.lid = lid
	co.warmCounted = co.warm
	co.mu.Unlock()
	if co.warm {
		ss.s.warmHeld.Add(1)
	}
	m := wire.ClientMsg{T: wire.TGranted, ID: co.req, Co: co.co, Worker: co.w.ID(), PID: co.w.PID(), N: pl.Checkouts(), Direct: true, Warm: co.warm, Draining: ss.s.stopping.Load(), Spare: pl.Spare()}
	// The queue owns cEnd now: it closes it once sent, or if the session ends first (then
	// serve releases the checkout, which ends the lease).
	_, _ = ss.out.AppendRights(func(b []byte) []byte {
		b, _ = wire.AppendClientMsg(b, &m)
		return b
	}, cEnd)
	co.mu.Lock()
	co.announced = true // a reclaim may follow the grant now, never precede it (warm.go)
	co.mu.Unlock()
	return true
}

// refuseDirectCall answers a call sent to taskd for a direct checkout: its calls go over
// the pair.
func (co *checkout) refuseDirectCall(id uint64) {
	m := wire.ClientMsg{T: wire.TFail, Code: wire.CodeInvalidRequest,
		Msg: fmt.Sprintf("checkout %d is a direct lease: send its calls on the socketpair that came with the grant, not to taskd", co.co)}
	co.ss.send(co.address(&m, id))
}

// releaseDirect is release for a direct checkout. With a call running on the lease (the
// client released with calls outstanding, or its connection died mid-call) it ends the
// checkout as an abort does; else the worker ends the lease and is pooled once it has,
// or is retired at once.
func (co *checkout) releaseDirect(retire bool) {
	calls, ok, errs := co.w.LeaseCounts()
	running := co.leaseCallRunning()
	co.mu.Lock()
	if co.state >= coReleased {
		co.mu.Unlock()
		return
	}
	if running {
		co.mu.Unlock()
		co.end(errors.New("checkout released with a call still running on its direct lease"), nil)
		return
	}
	co.state = coReleased
	co.calls, co.errs = calls, errs
	retire = co.retireLocked(retire)
	co.mu.Unlock()
	co.ss.forget(co)
	if retire {
		// Stopped (EOF on stdin) with its lease: it exits, which closes its end.
		co.observeLease(worker.LeaseEnd{Calls: calls, OK: ok, Errs: errs})
		co.giveBack(true)
		return
	}
	co.w.EndLease(co.leaseEnded(false))
}

// leaseCallRunning reports whether the worker's stats page shows a call running on co's
// lease.
func (co *checkout) leaseCallRunning() bool {
	wi := co.w.Info()
	return !wi.CallStarted.IsZero()
}

// leaseEnded returns the callback that gives the worker back once its lease has ended:
// retired if asked, or if it did not end in order (it exited or was killed, or a call
// that started as it was released had to be interrupted).
func (co *checkout) leaseEnded(retire bool) func(worker.LeaseEnd) {
	return func(e worker.LeaseEnd) {
		co.observeLease(e)
		co.giveBack(retire || e.Err != nil || e.Interrupted)
	}
}

// observeLease counts the lease's calls, from its stats page, in the pool's call count
// and in the interface's metrics (those a scrape has not counted yet). The checkout has
// been released or has ended: syncLeaseCalls leaves it alone from then on.
func (co *checkout) observeLease(e worker.LeaseEnd) {
	co.lease.CountCalls(e.Calls)
	co.mu.Lock()
	c := co.counted
	co.counted = e
	co.mu.Unlock()
	co.im.countCalls(directMethod, callOK, sub(e.OK, c.OK))
	co.im.countCalls(directMethod, callError, sub(e.Errs, c.Errs))
}

// syncLeaseCalls adds the calls made so far on every held direct lease to
// taskd_calls_total, read from the workers' stats pages: a scrape calls it, so that the
// counter moves while a lease is held, not only when it ends.
func (s *Server) syncLeaseCalls() {
	for _, ss := range s.allSessions() {
		for _, co := range ss.held() {
			co.syncLeaseCalls()
		}
	}
}

func (co *checkout) syncLeaseCalls() {
	co.mu.Lock()
	direct := co.direct && co.state == coHeld
	co.mu.Unlock()
	if !direct {
		return
	}
	calls, ok, errs := co.w.LeaseCounts()
	co.mu.Lock()
	if co.state != coHeld { // ended meanwhile: observeLease counts it all
		co.mu.Unlock()
		return
	}
	c := co.counted
	co.counted = worker.LeaseEnd{Calls: max(calls, c.Calls), OK: max(ok, c.OK), Errs: max(errs, c.Errs)}
	co.mu.Unlock()
	co.im.countCalls(directMethod, callOK, sub(ok, c.OK))
	co.im.countCalls(directMethod, callError, sub(errs, c.Errs))
}

// sub is a - b, or 0 if b is larger.
func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// endDirect is end's last step for a direct checkout: the lease is interrupted (cancel
// the running call, end, cancel_grace, kill) and the worker retired once it has settled.
func (co *checkout) endDirect(cause error) {
	co.w.InterruptLease(cause, co.leaseEnded(true))
}

// directLost is the lease's lost callback: the worker exited, or a call passed
// call_timeout. The client is told (lost, with the code), and the checkout ends.
func (co *checkout) directLost(err error) {
	co.lost(err)
}

// leaseCalls returns the calls made on a direct checkout so far, from the stats page.
func (co *checkout) leaseCalls() uint64 {
	calls, _, _ := co.w.LeaseCounts()
	return calls
}

// countCalls adds n calls of method with outcome o to taskd_calls_total.
func (im *ifaceMetrics) countCalls(method string, o callOutcome, n uint64) {
	if n == 0 {
		return
	}
	ci := im.method(method).out[o].Load()
	if ci == nil {
		ci = im.resolve(method, o)
	}
	ci.count.Add(float64(n))
}
