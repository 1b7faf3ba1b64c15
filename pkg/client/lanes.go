package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Connections. A Client spreads its checkouts over up to Config.Conns connections to
// taskd, each with its own reader goroutine here and its own session (reader goroutine
// and send queue) in taskd, so that no one connection, goroutine or lock carries every
// call of a busy Client. A connection is a lane: lane 0 is dialled when something waits
// for a connection and none is up (as before there were lanes), and lane i > 0 only
// while the Client has more than growAt·i checkouts at the daemon stage (waiting for
// taskd, or held), so a lightly used Client keeps one connection. A checkout's messages
// all travel on the connection it was requested on; requests and admin requests go to
// the live lanes in turn.

// maxConns bounds Config.Conns' default (GOMAXPROCS): enough readers to keep the cores of
// a large machine busy, few enough that a Client costs taskd little.
const maxConns = 8

// extraRefusedDelay is how long a lane other than lane 0 waits before it dials again
// after taskd refused it for max_clients.
const extraRefusedDelay = 5 * time.Second

// growAt is the number of checkouts per connection past which the next lane is dialled.
const growAt = 2

// lane is one connection slot of a Client, with the goroutine that dials it (manage).
// Guarded by Client.mu.
type lane struct {
	i       int
	kick    chan struct{} // wakes the lane's manager (cap 1)
	started bool          // manage runs for this lane
	cn      *conn         // the live connection, or nil
}

// defaultConns is Config.Conns' default.
func defaultConns() int { return min(max(runtime.GOMAXPROCS(0), 1), maxConns) }

// kickLocked starts the lane's manager if needed and wakes it.
func (c *Client) kickLocked(l *lane) {
	if !l.started {
		l.started = true
		c.wg.Add(1)
		go c.manage(l)
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// wantConnLocked notes that something waits for a connection: wakes lane 0's manager.
func (c *Client) wantConnLocked() { c.kickLocked(c.lanes[0]) }

// growLocked wakes the lanes that the load calls for and that are down: lane i while more
// than growAt·i checkouts are held or waiting (lane 0 while any is, once another lane is
// up). At most Config.Conns steps.
func (c *Client) growLocked() {
	if c.live == 0 {
		return // lane 0 is dialled on demand; the others follow once it is up
	}
	for i := 0; i < len(c.lanes) && c.held > growAt*i; i++ {
		if l := c.lanes[i]; l.cn == nil {
			c.kickLocked(l)
		}
	}
}

// pickConnLocked returns the live connection the next request goes to: the lanes in
// turn, skipping one that taskd said is draining if another is not. nil if none is up.
func (c *Client) pickConnLocked() *conn {
	if c.live == 0 {
		return nil
	}
	var fallback *conn
	n := len(c.lanes)
	for range n {
		c.rr++
		cn := c.lanes[int(c.rr%uint32(n))].cn
		if cn == nil {
			continue
		}
		if cn.draining == "" {
			return cn
		}
		if fallback == nil {
			fallback = cn
		}
	}
	return fallback
}

// manage is a lane's connection manager: the one goroutine that dials it. It dials when
// the lane is needed (needConn) and down, with backoff between failed attempts, and exits
// on Close.
func (c *Client) manage(l *lane) {
	defer c.wg.Done()
	var delay time.Duration
	for {
		if !c.waitNeed(l) {
			return
		}
		if delay > 0 {
			if !c.sleep(l, delay) {
				return
			}
			if !c.needConn(l) {
				continue // whoever waited gave up meanwhile
			}
		}
		nc, err := c.dial()
		if err != nil {
			c.mu.Lock()
			if c.live == 0 {
				c.lastErr = err
				for _, ch := range c.dialWaiters {
					ch <- err
				}
				c.dialWaiters = nil
				if c.inMulti {
					c.failUnsentLocked(err)
				}
			}
			c.mu.Unlock()
			delay = nextDelay(delay)
			continue
		}
		cn := c.attach(nc, l)
		if cn == nil {
			return // closed
		}
		start := time.Now()
		select {
		case <-cn.dead:
		case <-c.ctx.Done():
			return
		}
		switch {
		case l.i > 0 && cn.fatalCode == wire.CodeTooManyClients:
			// taskd is at max_clients: the lanes up carry the load meanwhile.
			delay = extraRefusedDelay
		case time.Since(start) >= stableConn:
			delay = 0
		default:
			delay = nextDelay(delay)
		}
	}
}

// failUnsentLocked fails the checkout requests waiting for a connection, which a dial
// failed to make, with ErrUnreachable: a Client of one daemon among several (inMulti)
// does not keep them waiting for it, since they were not sent, and another daemon may
// serve them (multi.go).
func (c *Client) failUnsentLocked(err error) {
	for r := c.unsent.pop(); r != nil; r = c.unsent.pop() {
		failReqLocked(r, &unreachableError{addr: c.cfg.Addr, last: err, waiting: fmt.Sprintf("checkout of %q", c.cfg.Interface)})
		c.freeSlotLocked() // may queue a waiter for a MaxWorkers slot in unsent: failed in turn
	}
}

func nextDelay(d time.Duration) time.Duration {
	if d == 0 {
		return backoffMin
	}
	d *= 2
	if d > backoffMax {
		d = backoffMax
	}
	return d
}

// needConn reports whether lane l should be dialled: it is down and, for lane 0,
// something waits for a connection; for another lane, the load calls for it.
func (c *Client) needConn(l *lane) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || l.cn != nil {
		return false
	}
	if l.i == 0 && (c.unsent.len() > 0 || len(c.dialWaiters) > 0) {
		return true
	}
	return c.live > 0 && c.held > growAt*l.i // lane 0 too, if it was lost while others are up
}

// waitNeed blocks until lane l is needed (and down), or the Client is closed.
func (c *Client) waitNeed(l *lane) bool {
	for {
		if c.needConn(l) {
			return true
		}
		select {
		case <-l.kick:
		case <-c.ctx.Done():
			return false
		}
	}
}

// sleep waits d (with some jitter), or less if an admin request wants a dial now. It
// returns false if the Client was closed.
func (c *Client) sleep(l *lane, d time.Duration) bool {
	d += time.Duration(rand.Int64N(int64(d)/5 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-c.ctx.Done():
			return false
		case <-l.kick:
			c.mu.Lock()
			urgent := l.i == 0 && len(c.dialWaiters) > 0
			c.mu.Unlock()
			if urgent {
				return true
			}
		}
	}
}

func (c *Client) dial() (net.Conn, error) {
	to := dialTimeout
	if c.inMulti {
		to = multiDialTimeout
	}
	ctx, cancel := context.WithTimeout(c.ctx, to)
	defer cancel()
	nd := &net.Dialer{}
	if c.usesTLS() { // tls.go
		td := &tls.Dialer{NetDialer: nd, Config: c.cfg.TLS}
		nc, err := td.DialContext(ctx, "tcp", c.addr.Address)
		return nc, c.tlsError(err)
	}
	return nd.DialContext(ctx, c.addr.Network, c.addr.Address)
}
