package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/procfs"
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
	ExitMaxAge                          // recycled: reached its max_age
	ExitMaxRSS                          // recycled: its process tree's RSS exceeded max_rss
	ExitBye                             // the worker asked to be retired
	ExitIdleTimeout                     // idle above min_idle for idle_timeout
	ExitReleased                        // its checkout retired it (an error not kept, the client's own rules)
	ExitCallTimeout                     // killed: a call ran past call_timeout
	ExitProtocolError                   // killed: it broke the worker protocol
	ExitKilled                          // killed for its checkout: aborted, a deadline passed, released with calls running
	ExitCrashed                         // it ended on its own (a crash, an exit, a signal from outside taskd)
	ExitShutdown                        // stopped because the pool closed
	ExitReload                          // a reload replaced its generation, or lowered max_workers
	ExitAdmin                           // retired or killed by an admin request (RetireWorker, KillWorker)
	NumExitReasons                      // how many reasons there are
)

var exitNames = [NumExitReasons]string{
	"max_checkouts", "max_age", "max_rss", "bye", "idle_timeout", "released", "call_timeout", "protocol_error",
	"killed", "crashed", "shutdown", "reload", "admin",
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
	if p.entries[e.w] == e && !e.counted { // not reaped yet: onExit will uncount it
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
	case e.killed: // by KillWorker: whatever the kill made of it
		return ExitAdmin
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

// newEntry makes the entry of a worker of generation gen that has just become ready, with
// its own recycling limits. p.mu is held.
func (p *Pool) newEntry(w *worker.Worker, gen int) *entry {
	e := &entry{w: w, readyAt: time.Now(), gen: gen}
	p.limitLocked(e)
	return e
}

// limitLocked draws e's own recycling limits from cfg's.
func (p *Pool) limitLocked(e *entry) {
	e.maxAge, e.maxRSS = 0, 0
	if p.cfg.MaxAge > 0 {
		e.maxAge = time.Duration(float64(p.cfg.MaxAge) * p.jitter())
	}
	if p.cfg.MaxRSS > 0 {
		e.maxRSS = int64(float64(p.cfg.MaxRSS) * p.jitter())
	}
}

// jitter returns a factor in [1−RecycleJitter, 1]. p.mu is held.
func (p *Pool) jitter() float64 {
	return 1 - p.cfg.RecycleJitter*rand.Float64()
}

// recycle retires workers past their max_age or max_rss: idle ones at once (their
// replacement started first when the pool needs one), busy ones at release. It runs on
// one goroutine per pool, owned by the pool, with the cfg of its start, until ctx ends
// (Close, or a Reconfigure that starts another).
func (p *Pool) recycle(ctx context.Context, cfg Config) {
	defer p.wg.Done()
	defer crash.OnPanic(p.log, "pool recycler")
	every := cfg.SampleEvery
	if cfg.MaxAge > 0 {
		every = min(every, max(cfg.MaxAge/10, 10*time.Millisecond))
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastSample time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var over map[*entry]int64
		if cfg.MaxRSS > 0 && time.Since(lastSample) >= cfg.SampleEvery {
			lastSample = time.Now()
			over = p.sampleRSS()
		}
		var stop []*entry
		now := time.Now()
		p.mu.Lock()
		for e, rss := range over {
			if p.entries[e.w] != e || e.state == stRetiring || e.state == stWarming {
				continue // warming: checked once it takes over
			}
			if e.state == stBusy {
				e.overRSS = true // retired at release
				continue
			}
			if e.doomed {
				continue
			}
			p.log.Info("worker over max_rss", zap.String("worker", e.w.ID()), zap.Int64("rss", rss), zap.Int64("max_rss", e.maxRSS))
			if p.recycleIdleLocked(e, ExitMaxRSS, "exceeded max_rss") {
				stop = append(stop, e)
			}
		}
		if cfg.MaxAge > 0 {
			var old []*entry
			for _, e := range p.idle {
				if e.maxAge > 0 && now.Sub(e.readyAt) >= e.maxAge && !e.doomed {
					old = append(old, e)
				}
			}
			for _, e := range old {
				if p.recycleIdleLocked(e, ExitMaxAge, "reached max_age") {
					stop = append(stop, e)
				}
			}
		}
		p.mu.Unlock()
		for _, e := range stop {
			p.stop(e)
		}
	}
}

// recycleIdleLocked recycles an idle worker (max_age, max_rss). If the pool needs it to keep
// MinIdle ready workers, it is doomed instead of retired: it stays idle and serves on, out
// of the MaxWorkers cap, while its replacement starts, and is retired when a start ends
// (replacedLocked), or at release if it serves a checkout meanwhile. Otherwise it is
// retired now; it returns true if the caller must stop it.
func (p *Pool) recycleIdleLocked(e *entry, why ExitReason, reason string) (stopNow bool) {
	e.why, e.reason = why, reason
	if why == ExitMaxRSS {
		e.overRSS = true // retired at release if it serves meanwhile
	}
	if p.cfg.MinIdle > len(p.idle)-p.doomed-1 && !p.closed && !p.draining {
		e.doomed = true
		p.doomed++
		if !e.counted {
			e.counted = true
			p.retiring++
		}
		p.maybeSpawnLocked()
		return false
	}
	p.removeIdleLocked(e)
	return p.retireLocked(e, why, reason)
}

// replacedLocked returns the doomed worker that has waited longest, retired, for the
// caller to stop now that a start has ended with a ready worker (one new worker replaces
// one doomed one); nil if there is none.
func (p *Pool) replacedLocked() *entry {
	if p.doomed == 0 {
		return nil
	}
	var old *entry
	for _, e := range p.idle {
		if e.doomed && (old == nil || e.readyAt.Before(old.readyAt)) {
			old = e
		}
	}
	p.removeIdleLocked(old)
	old.state = stRetiring
	return old
}

// unidleLocked accounts for e leaving the idle list.
func (p *Pool) unidleLocked(e *entry) {
	if e.doomed {
		p.doomed--
	}
}

// sampleRSS reads the RSS of each live worker's process tree (outside the lock) and
// returns those over their limit.
func (p *Pool) sampleRSS() map[*entry]int64 {
	type sample struct {
		e   *entry
		max int64
	}
	p.mu.Lock()
	list := make([]sample, 0, len(p.entries))
	for _, e := range p.entries {
		if e.state != stRetiring && e.maxRSS > 0 {
			list = append(list, sample{e, e.maxRSS})
		}
	}
	p.mu.Unlock()
	var over map[*entry]int64
	for _, x := range list {
		if rss := treeRSS(x.e.w.PID()); rss > x.max {
			if over == nil {
				over = make(map[*entry]int64)
			}
			over[x.e] = rss
		}
	}
	return over
}

// treeRSS returns the resident set size of process pid and all its descendants, in bytes;
// processes that are gone count 0.
func treeRSS(pid int) int64 {
	rss, _ := procfs.RSS(pid)
	for _, c := range procfs.Children(pid) {
		rss += treeRSS(c)
	}
	return rss
}
