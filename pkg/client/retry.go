package client

import (
	"context"
	"errors"
	"fmt"
)

// MaxRetries is how many times CallIdempotent runs a call again after its worker was lost.
const MaxRetries = 3

// CallIdempotent is Call for a method that is safe to run more than once: one whose second
// run, with the same arguments, does no harm (a lookup, a hash, a render, a write that
// sets rather than adds). If the call's worker is lost before it answers (it crashed or
// was killed, or the connection to taskd broke, say because taskd restarted), the call
// may or may not have run, and Call would fail with ErrWorkerLost; CallIdempotent runs it
// again on a fresh checkout instead, up to MaxRetries times, within one deadline for all
// attempts (ctx's, or Config.Timeout). Retries are counted in Stats.Retries.
//
// It never retries anything else: not a RemoteError (the method ran and raised), not a
// call_timeout (ErrCallTimeout: it would likely run as long again), not a protocol error,
// not a refusal (overloaded, unavailable, unknown interface), and not a context that
// ended. Calls on a held Checkout are never retried: they share the worker's state.
func (c *Client) CallIdempotent(ctx context.Context, method string, result any, args ...any) error {
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	var errs []error
	for attempt := 0; ; attempt++ {
		err := c.Call(ctx, method, result, args...)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			if err != nil && len(errs) > 0 {
				// The last error says why it stopped; the earlier ones, why it retried.
				return &wrapped{text: fmt.Sprintf("%v (after %d retries: %v)", err, attempt, errors.Join(errs...)),
					errs: []error{err}}
			}
			return err
		}
		errs = append(errs, err)
		if attempt >= MaxRetries {
			return &wrapped{text: fmt.Sprintf("%v (gave up after %d retries)", err, attempt), errs: []error{err}}
		}
		c.mu.Lock()
		c.stats.Retries++
		c.mu.Unlock()
	}
}

// retryable reports whether a one-shot call that failed with err may be run again by
// CallIdempotent: its worker was lost before it answered, for no reason that would recur.
func retryable(err error) bool {
	return errors.Is(err, ErrWorkerLost) && !errors.Is(err, ErrCallTimeout) && !errors.Is(err, ErrProtocol)
}
