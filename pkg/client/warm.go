package client

import (
	"context"
	"slices"
	"sync"
	"time"
)

// DefaultWarmFor is how long a warm lease stays idle with a Client, waiting for its next
// one-shot call, when Config.WarmFor is 0. A lease kept warm holds a worker that the pool
// counts as busy (it may start more to keep min_idle), so the default is short: long
// enough for the calls of a burst to find it warm, short enough that an idle Client gives
// its workers back within a second. taskd takes a warm lease back sooner whenever it
// wants the worker.
const DefaultWarmFor = time.Second

// Warm leases (docs/client-protocol.md, "Warm leases"). Client.Call over a unix socket,
// with direct leases on, asks taskd for a warm lease instead of a one-shot call: if the
// worker can take a direct lease, taskd grants one (flagged warm) without running the
// call, and the Client makes the call on the lease itself. After the call it keeps the
// lease idle (warmSet) for WarmFor; the next one-shot calls take it and go straight to
// the worker, with a "done" before each so that the worker's done hook runs between them,
// as between relayed one-shot calls. A lease is released (and so never kept) after a
// call that failed in any way, after WarmFor idle, when taskd reclaims it (at once if
// idle, else after its call), when a Checkout needs its MaxWorkers slot, and on Close.

// warmSet holds the warm leases not in use, most recently used last. Lock order:
// warmSet.mu, then Checkout.mu or Client.mu; neither is held while taking warmSet.mu.
type warmSet struct {
	mu     sync.Mutex
	idle   []*Checkout
	closed bool // Close ran: nothing is kept any more
	// coolUntil: taskd reclaimed a lease, so its pool is short of workers: until then,
	// one-shot calls ask for no new warm lease (see wantWarm).
	coolUntil time.Time
}

// warmFor is the effective Config.WarmFor: > 0, or 0 when leases are not kept warm.
func (c *Client) warmFor() time.Duration {
	switch {
	case c.cfg.WarmFor < 0 || c.cfg.Direct != DirectAuto:
		return 0
	case c.cfg.WarmFor == 0:
		return DefaultWarmFor
	}
	return c.cfg.WarmFor
}

// warmCool bounds how long a Client asks for no warm lease after taskd reclaimed one
// (WarmFor if shorter).
const warmCool = time.Second

// wantWarm reports whether a one-shot call that found no warm lease should ask taskd for
// one. Not for a while (warmCool, or WarmFor if shorter) after taskd reclaimed a lease: its pool is short of workers then,
// and a lease granted would be reclaimed again after one call, each time paying for a
// lease's set-up and end; plain one-shot calls queue in taskd at the cost of one round
// trip each.
func (c *Client) wantWarm() bool {
	if c.warmFor() <= 0 {
		return false
	}
	c.warm.mu.Lock()
	defer c.warm.mu.Unlock()
	return c.warm.coolUntil.IsZero() || time.Now().After(c.warm.coolUntil)
}

// takeWarm returns the warm lease used last, taken out of the set for one call, or nil if
// none is idle. Leases that failed meanwhile (their connection was lost, or taskd killed
// their worker) are released on the way.
func (c *Client) takeWarm() *Checkout {
	c.warm.mu.Lock()
	var co *Checkout
	var dead []*Checkout
	for n := len(c.warm.idle); n > 0 && co == nil; n-- {
		last := c.warm.idle[n-1]
		c.warm.idle[n-1] = nil
		c.warm.idle = c.warm.idle[:n-1]
		last.parked = false
		if last.stateErr() == nil {
			co = last
		} else {
			dead = append(dead, last)
		}
	}
	c.warm.mu.Unlock()
	for _, d := range dead {
		d.Release()
	}
	return co
}

// callWarm makes the one-shot call (method, encoded arguments a, started at start) on
// warm lease co, which the caller has to itself, then keeps the lease or releases it.
func (c *Client) callWarm(ctx context.Context, co *Checkout, method string, a []byte, result any, start time.Time) error {
	p := co.send(method, a, start, co.warmUses > 0) // a done first: the hook of the call before
	co.warmUses++
	err := p.Wait(ctx, result)
	p.recycle()
	c.parkWarm(co, err)
	return err
}

// parkWarm puts co back in the set after a call that returned err, or releases it if it
// is not to be kept: the call failed (a raise, a lost worker, a deadline: the worker is
// then retired or killed by taskd's rules), co is relayed (taskd could not make the
// lease), taskd reclaimed it, or the Client is closing.
func (c *Client) parkWarm(co *Checkout, err error) {
	keep := err == nil && co.pair != nil && co.stateErr() == nil
	c.warm.mu.Lock()
	if keep && !co.reclaimed && !c.warm.closed {
		co.parked = true
		c.warm.idle = append(c.warm.idle, co)
		if co.warmTimer == nil {
			co.warmTimer = time.AfterFunc(c.warmFor(), func() { c.expireWarm(co) })
		} else {
			co.warmTimer.Reset(c.warmFor())
		}
		c.warm.mu.Unlock()
		return
	}
	c.warm.mu.Unlock()
	co.Release()
}

// unparkLocked takes co out of the idle set; false if it was not idle (in use, or
// released). c.warm.mu is held.
func (c *Client) unparkLocked(co *Checkout) bool {
	if !co.parked {
		return false
	}
	co.parked = false
	if i := slices.Index(c.warm.idle, co); i >= 0 {
		c.warm.idle = slices.Delete(c.warm.idle, i, i+1)
	}
	return true
}

// expireWarm releases co if it is still idle: its WarmFor has passed since its last call.
func (c *Client) expireWarm(co *Checkout) {
	c.warm.mu.Lock()
	idle := c.unparkLocked(co)
	c.warm.mu.Unlock()
	if idle {
		co.Release()
	}
}

// reclaim handles taskd's reclaim of checkout id on cn: a warm lease is released now if
// it is idle, else after the call running on it. It runs on the reader goroutine.
func (c *Client) reclaim(cn *conn, id uint64) {
	co := cn.checkout(id)
	if co == nil || !co.warm {
		return // released meanwhile (the release is on its way), or not a warm lease
	}
	c.warm.mu.Lock()
	co.reclaimed = true
	c.warm.coolUntil = time.Now().Add(min(c.warmFor(), warmCool))
	idle := c.unparkLocked(co)
	c.warm.mu.Unlock()
	if idle {
		co.Release()
	}
}

// dropWarm releases the idle warm lease used longest ago, if any, so that its MaxWorkers
// slot serves a checkout that waits for one.
func (c *Client) dropWarm() {
	c.warm.mu.Lock()
	var co *Checkout
	if len(c.warm.idle) > 0 {
		co = c.warm.idle[0]
		c.unparkLocked(co)
	}
	c.warm.mu.Unlock()
	if co != nil {
		co.Release()
	}
}

// closeWarm releases every idle warm lease and keeps no more (Close).
func (c *Client) closeWarm() {
	c.warm.mu.Lock()
	c.warm.closed = true
	idle := c.warm.idle
	c.warm.idle = nil
	for _, co := range idle {
		co.parked = false
		if co.warmTimer != nil {
			co.warmTimer.Stop()
		}
	}
	c.warm.mu.Unlock()
	for _, co := range idle {
		co.Release()
	}
}
