package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// PingResult is the answer to Client.Ping.
type PingResult struct {
	Version string        // taskd's version
	RTT     time.Duration // round-trip time of the ping on the established connection
	// Draining says that taskd is shutting down (it got SIGTERM): it refuses new
	// checkouts, and its held ones run until they are released or its shutdown_grace
	// ends. A readiness probe should fail on it.
	Draining bool
}

// Ping asks taskd for its version and measures the round trip. Unlike Checkout it does not
// wait for an unreachable daemon: if taskd cannot be dialled, it fails at once with an
// error matching ErrUnreachable that carries the dial error.
func (c *Client) Ping(ctx context.Context) (PingResult, error) {
	m, rtt, err := c.admin(ctx, adminOp{t: wire.TPing, timeout: c.timeout})
	if err != nil {
		return PingResult{}, err
	}
	return PingResult{Version: m.Version, RTT: rtt, Draining: m.Draining}, nil
}

// DaemonStatus returns taskd's status report: its pools and their workers. Like Ping it
// fails at once if taskd cannot be dialled.
func (c *Client) DaemonStatus(ctx context.Context) (DaemonStatus, error) {
	m, _, err := c.admin(ctx, adminOp{t: wire.TStatus, timeout: c.timeout})
	if err != nil {
		return DaemonStatus{}, err
	}
	if m.Status == nil {
		return DaemonStatus{}, &wrapped{text: ErrProtocol.Error() + ": taskd answered status without a status object; this is a daemon bug", errs: []error{ErrProtocol}}
	}
	return statusFromWire(m.Status), nil
}

// adminReq is an admin request (ping, status, reload) waiting for its answer.
type adminReq struct {
	t    string // the request's type, for error messages
	done chan struct{}
	msg  wire.ClientMsg
	err  error
}

// adminOp describes an admin request for admin.
type adminOp struct {
	t       string        // the request's type: wire.TPing, wire.TStatus or wire.TReload
	iface   string        // the interface the request is about, if any
	timeout time.Duration // bounds the request if ctx has no deadline; 0: no bound
	// slow, if set, is added to the error when no answer came in time: why the answer
	// may take long, or not come at all.
	slow string
	req  wire.ClientMsg // fields the request carries besides t and id (an admin op's); zero for none
}

// admin sends an admin request, dialling first if needed (once: failure is reported at
// once), and waits for the answer: the message that carries the request's id (pong,
// status or reloaded), or the error of its refusal.
func (c *Client) admin(ctx context.Context, op adminOp) (wire.ClientMsg, time.Duration, error) {
	if c.multi != nil {
		return c.multi.admin(ctx, op)
	}
	ctx, cancel := withTimeout(ctx, op.timeout)
	defer cancel()
	t, what := op.t, op.t // what names the request in errors: "admin drain"
	if op.req.Op != "" {
		what += " " + op.req.Op
	}
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return wire.ClientMsg{}, 0, c.closedErr()
		}
		cn := c.pickConnLocked() // any: admin requests have no affinity
		if cn == nil {
			if attempt >= 3 { // connected, then lost the connection, three times
				err := &unreachableError{addr: c.cfg.Addr, last: c.lastErr, waiting: what}
				c.mu.Unlock()
				return wire.ClientMsg{}, 0, err
			}
			ch := make(chan error, 1)
			c.dialWaiters = append(c.dialWaiters, ch)
			c.wantConnLocked()
			c.mu.Unlock()
			if err := c.awaitDial(ctx, ch, what); err != nil {
				return wire.ClientMsg{}, 0, err
			}
			continue
		}
		c.nextID++
		id := c.nextID
		req := &adminReq{t: what, done: make(chan struct{})}
		cn.admin[id] = req
		m := op.req // the request's own fields (an admin op's)
		m.T, m.ID = t, id
		if op.iface != "" {
			m.Iface = op.iface
		}
		c.sendLocked(cn, &m)
		start := time.Now()
		c.mu.Unlock()

		select {
		case <-req.done:
			return req.msg, time.Since(start), req.err
		case <-ctx.Done():
			c.mu.Lock()
			delete(cn.admin, id)
			c.mu.Unlock()
			slow := ""
			if op.slow != "" {
				slow = " (" + op.slow + ")"
			}
			return wire.ClientMsg{}, 0, fmt.Errorf("client: %s: no answer from taskd at %s: %w%s", what, c.cfg.Addr, ctx.Err(), slow)
		}
	}
}

// awaitDial waits for the outcome of the dial that an admin request (what) asked for by
// adding ch to dialWaiters. It returns nil once a connection is up.
func (c *Client) awaitDial(ctx context.Context, ch chan error, what string) error {
	select {
	case err := <-ch:
		if err == nil || errors.Is(err, ErrClosed) {
			return err
		}
		return &unreachableError{addr: c.cfg.Addr, last: err, waiting: what}
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		if i := slices.Index(c.dialWaiters, ch); i >= 0 {
			c.dialWaiters = slices.Delete(c.dialWaiters, i, i+1)
		}
		return &unreachableError{addr: c.cfg.Addr, last: c.lastErr, ctxErr: ctx.Err(), waiting: what}
	}
}
