package worker

import (
	"fmt"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Cancel before kill: when the calls of a worker are given up (the caller's deadline or
// cancel, an abort, a release with calls outstanding, call_timeout), the worker gets a
// "cancel" for each and cancel_grace to answer them before it is killed. Its calls are
// answered at once with the error (nobody waits for the grace), and what the worker
// answers within the grace is dropped. Such a worker serves no more calls: its holder
// retires it once it has settled (see interrupt).

// interrupt gives up the worker's calls for cause: it refuses new calls, writes a cancel
// for each outstanding call that had none, answers them with an error wrapping cause, and
// kills the worker (with cause) unless they are all answered within cancelGrace. With a
// cancelGrace <= 0 it kills the worker at once, and the calls fail when it has exited,
// as they would on Kill. Only the first interrupt acts; a later one only registers
// settled.
//
// settled, if not nil, is called once, when nothing of the worker's is outstanding any
// more: at once if no call is outstanding (or the worker is gone), else when the last
// cancelled call is answered, or when the worker is killed or exits. It is called from
// interrupt itself, the stdout reader, the grace timer or the waiter, without c.mu, and
// must not block. One holder at a time may register it.
func (c *conn) interrupt(cause error, settled func()) {
	c.mu.Lock()
	if settled != nil {
		c.settled = settled
	}
	var cancels []uint64
	var answer []Replier
	var callErr error
	kill := false
	if c.interrupted == nil && !c.failed && !c.killing {
		c.interrupted = cause
		if c.refused == nil {
			c.refused = fmt.Errorf("worker %s is being retired: %w", c.id, cause)
		}
		switch {
		case c.cancelGrace <= 0:
			kill, c.killing = true, true
		case len(c.calls) > 0:
			callErr = fmt.Errorf("worker %s: %w; its calls were cancelled, and it is killed unless it answers them within cancel_grace (%s)",
				c.id, cause, c.cancelGrace)
			for i := range c.calls {
				x := &c.calls[i]
				if !x.cancelled {
					x.cancelled = true
					cancels = append(cancels, x.id)
				}
				answer = append(answer, x.r)
				x.r = nil
			}
			c.graceTimer = time.AfterFunc(c.cancelGrace, c.graceOver)
		}
	}
	done := c.settledLocked()
	c.mu.Unlock()

	if kill {
		c.kill(cause)
	}
	if len(cancels) > 0 {
		c.in.Append(func(b []byte) []byte {
			for _, id := range cancels {
				b = wire.AppendCancel(b, id)
			}
			return b
		})
	}
	for _, r := range answer {
		r.OnReply(Reply{Err: callErr})
	}
	if done != nil {
		done()
	}
}

// graceOver is the cancel_grace timer's function: it kills the worker if a cancelled call
// is still unanswered.
func (c *conn) graceOver() {
	c.mu.Lock()
	kill := len(c.calls) > 0 && !c.failed && !c.killing
	if kill {
		c.killing = true
	}
	cause, grace := c.interrupted, c.cancelGrace
	done := c.settledLocked()
	c.mu.Unlock()
	if kill {
		c.kill(fmt.Errorf("%w (its calls were not answered within cancel_grace, %s, after the cancel)", cause, grace))
	}
	if done != nil {
		done()
	}
}

// settledLocked returns the settled function to call now (taking it), or nil if it is not
// time yet: the worker has exited or is being killed, or it was interrupted and has no
// call outstanding. It stops the grace timer then. c.mu is held.
func (c *conn) settledLocked() func() {
	if c.settled == nil {
		return nil
	}
	if !c.failed && !c.killing && (c.interrupted == nil || len(c.calls) > 0) {
		return nil
	}
	if c.graceTimer != nil && !c.killing {
		c.graceTimer.Stop()
	}
	f := c.settled
	c.settled = nil
	return f
}

// setCancelGrace changes cancel_grace for the interrupts from now on (a grace under way
// keeps its end).
func (c *conn) setCancelGrace(d time.Duration) {
	c.mu.Lock()
	c.cancelGrace = d
	c.mu.Unlock()
}
