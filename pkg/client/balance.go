package client

import (
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"
)

// Balancing across daemons (multi.go): the power of two random choices, weighted by the
// spare workers each daemon reports. Of the daemons that may take a checkout (not
// vanished, not banned, not tried yet by this checkout), two are drawn at random and the
// one with more workers to spare gets it, or, as alike, the one where this Client has
// fewer checkouts outstanding (held, or waiting for a worker); with every daemon left
// banned, the bans are ignored (a ban list never stops the Client from serving).
//
// A daemon tells its spare workers (idle, less the checkouts queued there) on every grant
// and one-shot answer (wire.ClientMsg.Spare): a few bytes on replies the Client gets
// anyway, so the figure is as fresh as the Client's traffic there. It counts what only
// the daemon knows: how big its pool is, and what its other clients hold. The Client
// keeps it with its own outstanding count at that moment, and estimates the daemon's
// spare workers now as the figure plus the checkouts it has given back there since (less
// those it has asked for since): its own changes, which it knows at once. A figure older
// than spareFresh is not used (the daemon's pool has moved on since): when either daemon
// drawn has none, the two are compared by outstanding count alone, so that a daemon not
// heard from lately (one just found, or one this Client stopped using) gets checkouts as
// an idle one would, and its reply brings its figure. (Asking each daemon for its status
// on a timer instead was measured against this: BenchmarkMultiSkew, docs/scaling.md.)

// spareFresh is how long a daemon's spare count is used after it was reported.
const spareFresh = time.Second

// Switches for the tests and benchmarks that measure the weighting (never changed
// otherwise): noteSpares, whether replies update a daemon's spare count; weighSpares,
// whether pick uses it.
var noteSpares, weighSpares = true, true

// spareSeen is the spare count a daemon last reported, this Client's outstanding count
// there at that moment, and when. Safe for concurrent use: written by the backend's
// reader goroutines, read by pick.
type spareSeen struct{ n, out, at atomic.Int64 }

// note records a reported spare count (0 if the reply had none) while this Client had out
// checkouts outstanding at the daemon.
func (s *spareSeen) note(n, out int) {
	if !noteSpares {
		return
	}
	s.n.Store(int64(n))
	s.out.Store(int64(out))
	s.at.Store(time.Now().UnixNano())
}

// estimate returns the daemon's spare workers now, with out checkouts of this Client
// outstanding there now, by its report if that is fresh (ok).
func (s *spareSeen) estimate(now time.Time, out int) (n int, ok bool) {
	if !weighSpares || now.UnixNano()-s.at.Load() > int64(spareFresh) {
		return 0, false
	}
	return int(s.n.Load()+s.out.Load()) - out, true
}

// noteSpare records the spare count on a reply of the daemon (granted, or a one-shot
// answer). It runs on a reader goroutine of a backend (inMulti).
func (c *Client) noteSpare(n int) { c.spare.note(n, c.outstanding()) }

// better reports whether daemon b is a better choice than a for the next checkout.
func better(now time.Time, a, b *daemon) bool {
	ao, bo := a.c.outstanding(), b.c.outstanding()
	as, aok := a.c.spare.estimate(now, ao)
	bs, bok := b.c.spare.estimate(now, bo)
	if aok && bok && as != bs {
		return bs > as
	}
	return bo < ao
}

// pick returns the daemon the next attempt of a checkout goes to, or nil if every daemon
// was tried (or none is known yet). It fails only if the Client was closed.
func (m *multi) pick(tried []*daemon) (*daemon, error) {
	var buf [8]*daemon
	open, all := buf[:0:4], buf[4:4:8]
	now := time.Now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, (&Client{}).closedErr()
	}
	for _, d := range m.daemons {
		if d.vanished || slices.Contains(tried, d) {
			continue
		}
		all = append(all, d)
		if !now.Before(d.banUntil) {
			open = append(open, d)
		}
	}
	m.mu.Unlock()
	if len(open) == 0 {
		open = all // every daemon left is banned: try them all
	}
	switch len(open) {
	case 0:
		return nil, nil
	case 1:
		return open[0], nil
	}
	i := rand.IntN(len(open))
	j := rand.IntN(len(open) - 1)
	if j >= i {
		j++
	}
	if better(now, open[i], open[j]) {
		return open[j], nil
	}
	return open[i], nil
}

// outstanding is the number of checkouts (and one-shot calls) of this Client of one
// daemon that hold a slot at that daemon or wait for one: its load, for pick. Warm leases
// kept idle (warm.go) are not counted: they are workers ready for this Client's next
// one-shot calls there, not load.
func (c *Client) outstanding() int {
	c.warm.mu.Lock() // lock order: warm.mu is not held while Client.mu is taken
	idle := len(c.warm.idle)
	c.warm.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.held+c.slotQ.len()-idle, 0)
}

// takeDraining reports whether the daemon said, since the last call, that it is
// draining (on a grant: see wire.ClientMsg.Draining), and clears the mark.
func (c *Client) takeDraining() bool { return c.drainSeen.Swap(false) }

// DaemonStats is one daemon's row in the Stats of a Client of several daemons.
type DaemonStats struct {
	Addr        string // the daemon's address, as dialled (a dns:// name's, as resolved)
	Connected   bool   // a connection to it is up
	Banned      bool   // skipped for new checkouts for now: it could not be reached, refused one, said it is draining, or stalled (see Stalls)
	Vanished    bool   // no longer resolved: no new checkouts; closed once its checkouts end
	Outstanding int    // checkouts and one-shot calls held or waiting there now
	Spare       int    // its spare workers (idle, less checkouts queued) as estimated from its reply of the last second; 0 without one
	Checkouts   int64  // checkouts it granted and one-shot calls it answered
	Errors      int64  // checkouts and one-shot calls that failed there (a call that raised is not counted)
	// Stalls counts the times it did not answer a ping (within 1s) sent because a
	// request had waited 1s there: it accepts requests but does not answer (it may be
	// stopped or wedged). A stall bans it, and moves the checkouts waiting there.
	Stalls int64
}

// multiStats is Client.Stats for a Client of several daemons: the sums of the backends'
// Stats, and a row per daemon.
func (m *multi) stats(retries int64) Stats {
	now := time.Now()
	m.mu.Lock()
	ds := slices.Clone(m.daemons)
	banned := make([]bool, len(ds))
	vanished := make([]bool, len(ds))
	for i, d := range ds {
		banned[i], vanished[i] = now.Before(d.banUntil), d.vanished
	}
	m.mu.Unlock()
	st := Stats{MaxWorkers: m.cfg.MaxWorkers, Retries: retries, Waiting: int(m.slots.waiting.Load()),
		WaitCount: m.waitCount.Load(), WaitDuration: time.Duration(m.waitNanos.Load())}
	for i, d := range ds {
		b := d.c.Stats()
		spare, _ := d.c.spare.estimate(now, d.c.outstanding())
		st.OpenCheckouts += b.OpenCheckouts
		st.WarmLeases += b.WarmLeases
		st.Waiting += b.Waiting
		d.c.mu.Lock()
		connected := d.c.live > 0
		d.c.mu.Unlock()
		st.Daemons = append(st.Daemons, DaemonStats{
			Addr:        d.addr,
			Connected:   connected,
			Banned:      banned[i],
			Vanished:    vanished[i],
			Outstanding: d.c.outstanding(),
			Spare:       spare,
			Checkouts:   d.served.Load(),
			Errors:      d.errs.Load(),
			Stalls:      d.stalls.Load(),
		})
	}
	return st
}
