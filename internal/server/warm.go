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
// a lower max_workers), which the sweep of held checkouts looks at (holders.go). So FIFO
// fairness and the pool's limits hold: a warm lease delays another client by at most
// one call. Everything else about a warm lease is a direct lease's (direct.go).

// warmSweep is how often the held checkouts are swept while warm leases are held, to
// reclaim those whose pool wants their worker back.
const warmSweep = 100 * time.Millisecond

// reclaim asks the client to give back co, a warm lease, unless it was asked already or
// has been released. It returns whether it asked.
func (co *checkout) reclaim(why string) bool {
	if !co.warm {
		return false
	}
	co.mu.Lock()
	ask := co.direct && co.state == coHeld && !co.reclaimed
	co.reclaimed = co.reclaimed || ask
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
		oldest.reclaim("a checkout waits for a worker")
	}
}

// reclaimable reports whether co is a held warm lease that was not reclaimed yet.
func (co *checkout) reclaimable() bool {
	co.mu.Lock()
	defer co.mu.Unlock()
	return co.direct && co.state == coHeld && !co.reclaimed
}

// sweepWarm reclaims co if it is a warm lease whose pool wants its worker back; it
// reports whether co is a warm lease still held.
func (co *checkout) sweepWarm() bool {
	if !co.warm || !co.reclaimable() {
		return false
	}
	if co.lease.Wanted() {
		co.reclaim("the pool wants its worker back")
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
			co.reclaim(why)
		}
	}
}
