package client

import "time"

// Stats is a snapshot of a Client's checkouts, in the spirit of sql.DBStats.
type Stats struct {
	MaxWorkers    int // Config.MaxWorkers (0 = no client-side cap)
	OpenCheckouts int // checkouts granted and not yet released (one-shot calls not included)
	WarmLeases    int // warm leases held for one-shot calls (Config.WarmFor), in use or idle
	Waiting       int // Checkout and Client.Call calls waiting now for a worker (or, for Client.Call, its answer)

	// WaitCount is the number of finished waits for a worker by Checkout and Client.Call
	// (granted or not), and
	// WaitDuration their total time spent waiting, for a MaxWorkers slot and for taskd to
	// grant a worker. Every checkout waits at least one round trip. With several daemons
	// (Config.Addrs) a Checkout or Call counts once, whichever daemons it tried, timed
	// from the call until a daemon granted it (for Call, answered it) or it failed.
	WaitCount    int64
	WaitDuration time.Duration

	// Retries is the number of calls CallIdempotent ran again after their worker was lost.
	Retries int64

	// Daemons has a row per daemon of a Client of several daemons (Config.Addrs), in the
	// order they were listed or found; nil for a Client of one. The counts above are then
	// the sums of the daemons' (a checkout tried on two daemons counts two waits).
	Daemons []DaemonStats
}

// Stats returns a snapshot of the Client's checkout statistics.
func (c *Client) Stats() Stats {
	if c.multi != nil {
		c.mu.Lock()
		retries := c.stats.Retries
		c.mu.Unlock()
		return c.multi.stats(retries)
	}
	c.mu.Lock()
	st := c.stats
	c.mu.Unlock()
	st.Waiting = int(c.waiting.Load())
	st.WaitCount = c.waitCount.Load()
	st.WaitDuration = time.Duration(c.waitNanos.Load())
	return st
}
