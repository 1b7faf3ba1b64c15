package client

import (
	"context"
	"fmt"
	"time"
)

// Call checks out a worker, makes one call on it and releases it: the one-shot form of
// Checkout + Checkout.Call + Checkout.Release, in one round trip (the call travels with
// the checkout request, and taskd releases the worker once the call is answered); or in
// none, on a warm lease kept from an earlier Call (Config.WarmFor). Either way the
// worker's done hook runs after the call, before the worker's next call.
// Config.Timeout (if ctx has no deadline) bounds the whole sequence; if ctx ends during
// the call, Call returns at once and the client abandons the request: taskd cancels the
// call and retires the worker, killing it if it does not stop within the interface's
// cancel_grace, as with Checkout.Call. See Checkout.Call for result and
// args.
func (c *Client) Call(ctx context.Context, method string, result any, args ...any) error {
	if c.multi != nil {
		return c.multi.do(ctx, false, func(ctx context.Context, b *Client) error { return b.Call(ctx, method, result, args...) })
	}
	bp := getBuf()
	a, err := appendArgs(*bp, args)
	// Once checkout returns, the request is answered or abandoned: it is never sent
	// again, and its arguments can go back to the pool.
	defer putBuf(bp, a)
	if err != nil {
		return fmt.Errorf("client: call %s: encoding arguments: %w (the call was not sent)", callName(c.cfg.Interface, method), err)
	}
	start := time.Now()
	if co := c.takeWarm(); co != nil { // straight to the worker (warm.go)
		return c.callWarm(ctx, co, method, a, result, start)
	}
	// One message: the checkout request carries the call, and taskd answers the request
	// with the call's answer and releases the worker itself, so a one-shot call costs one
	// round trip, like a held checkout's call. Config.Timeout bounds both the wait for a
	// worker and the call. With warm leases on, taskd may instead grant the request as a
	// warm lease, on which the call is made here.
	once := &onceCall{method: method, args: a, warm: c.wantWarm()}
	co, err := c.checkout(ctx, once, start)
	if err != nil {
		return err
	}
	if co != nil {
		return c.callWarm(ctx, co, method, a, result, start)
	}
	err = decodeResult(once.r, result, c.cfg.Interface, method)
	recycleResult(once.r, once.rp)
	return err
}
