package client

import (
	"math/rand/v2"
	"slices"
	"time"
)

// Balancing across daemons (multi.go): the power of two random choices. Of the daemons
// that may take a checkout (not vanished, not banned, not tried yet by this checkout),
// two are drawn at random and the one where this Client has fewer checkouts outstanding
// (held, or waiting for a worker) gets it; with every daemon left banned, the bans are
// ignored (a ban list never stops the Client from serving). The counts are the Client's
// own: they need no message, and they follow the load at once, where a count that a
// daemon reports would be as old as its last reply.

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
	a, b := open[i], open[j]
	if b.c.outstanding() < a.c.outstanding() {
		return b, nil
	}
	return a, nil
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
			Checkouts:   d.served.Load(),
			Errors:      d.errs.Load(),
			Stalls:      d.stalls.Load(),
		})
	}
	return st
}
