package pool

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Retiring workers and counting why workers end. The rule of pool.go holds here too:
// nothing slow under p.mu.
//
// Spawn before retire: a retiring worker no longer counts against MaxWorkers, so its
// replacement can start at once, even at the cap. When retiring it makes the pool start a
// worker (for MinIdle or for waiting checkouts), the retiring worker is handed over: it
// keeps running, serving nothing, until a start in progress ends (ready or failed), and is
// stopped then; so live workers do not dip while the replacement gets ready. A retiring
// worker that nothing needs replaced is stopped at once.

// ExitReason says why a worker ended. Stats counts the workers of a pool that ended for
// each reason (Stats.Exits); String gives the name that status reports use. More reasons
// may be added: iterate up to NumExitReasons.
type ExitReason int

// Why workers end.
const (
	ExitMaxCheckouts  ExitReason = iota // recycled: served max_checkouts
	ExitBye                             // the worker asked to be retired
	ExitIdleTimeout                     // idle above min_idle for idle_timeout
	ExitReleased                        // its checkout retired it (an error not kept, the client's own rules)
	ExitCallTimeout                     // killed: a call ran past call_timeout
	ExitProtocolError                   // killed: it broke the worker protocol
	ExitKilled                          // killed for its checkout: aborted, a deadline passed, released with calls running
	ExitCrashed                         // it ended on its own (a crash, an exit, a signal from outside taskd)
	ExitShutdown                        // stopped because the pool closed
	NumExitReasons                      // how many reasons there are
)

var exitNames = [NumExitReasons]string{
	"max_checkouts", "bye", "idle_timeout", "released", "call_timeout", "protocol_error",
	"killed", "crashed", "shutdown",
}

// String returns the reason's name as status reports show it, such as "max_checkouts".
func (r ExitReason) String() string {
	if r < 0 || r >= NumExitReasons {
		return fmt.Sprintf("ExitReason(%d)", int(r))
	}
	return exitNames[r]
}

// retireLocked marks e retiring (unless it is already), takes it out of the MaxWorkers
// cap while it drains, and starts the workers that MinIdle and the waiting checkouts now
// need. It returns true if the caller must stop e (outside the lock), false if e was handed
// over to a start in progress, which stops it when it ends.
func (p *Pool) retireLocked(e *entry, why ExitReason, reason string) (stopNow bool) {
	if e.state == stRetiring {
		return false // someone else retired it and stops it
	}
	e.state, e.why, e.reason = stRetiring, why, reason
	if p.entries[e.w] == e { // not reaped yet: onExit will uncount it
		e.counted = true
		p.retiring++
	}
	if p.maybeSpawnLocked() > 0 && !p.closed && e.counted {
		p.handover = append(p.handover, e)
		return false
	}
	return true
}

// stop stops a retired worker gracefully (outside the lock).
func (p *Pool) stop(e *entry) {
	p.log.Debug("retiring worker", zap.String("worker", e.w.ID()), zap.String("reason", e.reason))
	e.w.Stop(fmt.Errorf("%w: retired: %s", worker.ErrStopped, e.reason), p.cfg.StopGrace)
}

// handedOverLocked returns the worker that waited longest for a replacement, to be stopped
// now that a start has ended, or nil.
func (p *Pool) handedOverLocked() *entry {
	if len(p.handover) == 0 {
		return nil
	}
	e := p.handover[0]
	p.handover[0] = nil
	p.handover = p.handover[1:]
	return e
}

// exitedLocked counts the exit of a registered worker under its reason and takes it out of
// the retiring count.
func (p *Pool) exitedLocked(e *entry) {
	if e.counted {
		p.retiring--
	}
	p.exits[exitReason(e, e.w.Err())]++
}

// exitReason classifies how a worker ended: what taskd killed it for, else why the pool
// retired it, else it ended on its own.
func exitReason(e *entry, err error) ExitReason {
	switch {
	case errors.Is(err, worker.ErrCallTimeout):
		return ExitCallTimeout
	case errors.Is(err, wire.ErrProtocol):
		return ExitProtocolError
	case errors.Is(err, worker.ErrStopped):
		if e.state == stRetiring {
			return e.why
		}
		return ExitShutdown
	}
	var ee *worker.ExitError
	if errors.As(err, &ee) && ee.Cause != nil {
		return ExitKilled
	}
	return ExitCrashed
}
