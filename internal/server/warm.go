package server

import (
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Warm leases (docs/client-protocol.md, "Warm leases"). A one-shot checkout request that
// asks for one ("once", "direct" and "warm"), on a unix socket, of a worker that can take
// a direct lease, is not run by taskd: it is granted as a direct lease flagged warm, and
// the client makes its one-shot calls on the lease itself, writing "done" before each
// call after the first, so that the worker's done hook runs between them as it does
// between relayed one-shot calls (the last one's hook runs when the lease ends). The
// client keeps the lease between calls for a short idle time, then releases it.
//
// taskd owns the worker all along and takes it back when it wants it: reclaim asks the
// client to release the lease, which it does at once if no call runs on it, else as soon
// as the call is answered. taskd asks when a checkout request finds no idle worker (the
// longest-held warm lease of the interface, one per request), and when the pool wants
// the worker back for any reason of its own (pool.Lease.Wanted: a checkout queued, a
// drain, a reload's new generation, max_age, max_rss, max_checkouts, an admin retire or
// a lower max_workers), which the sweep of held checkouts looks at (holders.go), asking
// again (reclaimAgain) while the lease is still held. A reclaim is only sent once the
// grant is in the session's send queue (announced): one sent before would reach the
// client ahead of the lease it names, and be ignored. So FIFO
// fairness and the pool's limits hold: a warm lease delays another client by at most
// one call. Everything else about a warm lease is a direct lease's (direct.go).

// warmSweep is how often the held checkouts are swept while warm leases are held, to
// reclaim those whose pool wants their worker back.
const warmSweep = 100 * time.Millisecond

// reclaimAgain is how long a client has to give back a warm lease that taskd reclaimed
// before the sweep asks again while the pool still wants the worker: a client releases an
// idle lease at once and a busy one after its call, so a lease still held after this
// long is one whose reclaim the client did not act on.
const reclaimAgain = time.Second

// reclaim asks the client to give back co, a warm lease, unless it was asked already
// (less than reclaimAgain ago if again is set) or has been released. It returns whether
// it asked.
func (co *checkout) reclaim(why string, again bool) bool {
	if !co.warm {
		return false
	}
	co.mu.Lock()
	ask := co.reclaimableLocked() || (again && co.heldDirectLocked() && time.Since(co.reclaimed) >= reclaimAgain)
	if ask {
		co.reclaimed = time.Now()
	}
	co.mu.Unlock()
	if ask {
		co.ss.log.Debug("reclaiming a warm lease", zap.String("interface", co.iface), zap.Uint64("co", co.co), zap.String("why", why))
		co.ss.send(&wire.ClientMsg{T: wire.TReclaim, Co: co.co})
	}
	return ask
}

// reclaimWarm reclaims the warm lease of interface iface held longest (and not reclaimed
// yet), if any: a checkout request of iface found no idle worker.
func (s *Server) reclaimWarm(iface string) {
	if s.warmHeld.Load() == 0 {
		return
	}
	var oldest *checkout
	for _, ss := range s.allSessions() {
		for _, co := range ss.held() {
			if co.warm && co.iface == iface && co.reclaimable() && (oldest == nil || co.granted.Before(oldest.granted)) {
				oldest = co
			}
		}
	}
	if oldest != nil {
		oldest.reclaim("a checkout waits for a worker", false)
	}
}

// reclaimable reports whether co is a held warm lease that was not reclaimed yet.
func (co *checkout) reclaimable() bool {
	co.mu.Lock()
	defer co.mu.Unlock()
	return co.reclaimableLocked()
}

func (co *checkout) reclaimableLocked() bool { return co.heldDirectLocked() && co.reclaimed.IsZero() }

// heldDirectLocked reports whether co is a direct lease held by a client that has been
// told of it. co.mu is held.
func (co *checkout) heldDirectLocked() bool { return co.direct && co.announced && co.state == coHeld }

// sweepWarm reclaims co if it is a warm lease whose pool wants its worker back (again if
// the client has not given it back within reclaimAgain); it reports whether co is a warm
// lease still held.
func (co *checkout) sweepWarm() bool {
	if !co.warm {
		return false
	}
	co.mu.Lock()
	held := co.heldDirectLocked()
	co.mu.Unlock()
	if !held {
		return false
	}
	if co.lease.Wanted() {
		co.reclaim("the pool wants its worker back", true)
	}
	return true
}

// reclaimAllWarm reclaims every warm lease held.
func (s *Server) reclaimAllWarm(why string) {
	if s.warmHeld.Load() == 0 {
		return
	}
	for _, ss := range s.allSessions() {
		for _, co := range ss.held() {
			co.reclaim(why, false)
		}
	}
}
