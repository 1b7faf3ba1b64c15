package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Spawning, exits and idle reaping: how workers come and go. The rule of pool.go holds
// here too: nothing slow under p.mu (a spawn runs on a goroutine of its own).

// maybeSpawnLocked starts as many workers as the waiting checkouts and MinIdle need,
// within MaxWorkers (retiring workers do not count), unless the pool is backing off after
// failed starts. It returns how many it started.
func (p *Pool) maybeSpawnLocked() int {
	if p.closed {
		return 0
	}
	live := p.servingLocked()
	// Starts in progress serve the waiters first; a worker serving a waiter comes back, so
	// it counts toward MinIdle too.
	need := p.waiters.Len() - p.starting
	if !p.draining {
		need = max(need, p.cfg.MinIdle-(len(p.idle)-p.doomed)-p.starting)
	}
	if room := p.cfg.MaxWorkers - live; need > room {
		need = room
	}
	if need <= 0 {
		return 0
	}
	if wait := time.Until(p.backoffUntil); wait > 0 {
		if p.retry == nil {
			p.wg.Add(1) // Close waits for the retry, or cancels it and calls Done itself
			p.retry = time.AfterFunc(wait, func() {
				defer p.wg.Done()
				p.mu.Lock()
				p.retry = nil
				p.maybeSpawnLocked()
				p.mu.Unlock()
			})
		}
		return 0
	}
	for range need {
		p.starting++
		p.nextID++
		p.spawns++
		id := fmt.Sprintf("%s-%d", p.cfg.Name, p.nextID)
		p.wg.Add(1)
		go p.spawnOne(id, p.gen, p.spawn)
	}
	return need
}

// servingLocked counts the workers held against MaxWorkers: registered ones that are
// neither retiring nor warming up for a new generation, and those starting.
func (p *Pool) servingLocked() int {
	n := len(p.entries) - p.retiring + p.starting
	if p.pending != nil {
		n -= len(p.pending.ready)
	}
	return n
}

// spawnOne starts a worker of generation gen with spawn, for the waiting checkouts and
// MinIdle.
func (p *Pool) spawnOne(id string, gen int, spawn Spawner) {
	defer p.wg.Done()
	defer crash.OnPanic(p.log, "pool spawn")
	w, err := spawn(p.ctx, id, p.onExit)
	p.mu.Lock()
	p.starting--
	if err == nil && w.Err() != nil {
		// It exited between ready and now. onExit, which may have run already, drops
		// only registered workers: this one is not registered, and counts as a failed
		// start.
		err = w.Err()
	}
	if err != nil {
		p.spawnFails++
		backoff := time.Duration(0)
		if gen == p.gen { // a replaced generation's failure does not hold the new one back
			backoff = p.failedStartLocked(err)
		}
		// Waiters that nothing else can serve fail now, with the reason, once the
		// interface has failed to start twice in a row: one failed start of a pool that
		// was healthy (a worker killed from outside while it started, say) gets a retry.
		failed := 0
		if p.starting == 0 && len(p.entries) == 0 && p.failures >= unavailableAfter {
			failed = p.failWaitersLocked(&UnavailableError{Interface: p.cfg.Name, Err: err})
		}
		p.maybeSpawnLocked()
		old := p.handedOverLocked() // no replacement came: stop it anyway
		p.mu.Unlock()
		if old != nil {
			p.stop(old)
		}
		if p.ctx.Err() == nil {
			p.log.Error("worker failed to start", zap.String("worker", id), zap.Error(err),
				zap.Duration("backoff", backoff), zap.Int("failed_checkouts", failed))
		}
		return
	}
	e := p.newEntry(w, gen)
	p.entries[w] = e
	if p.closed {
		e.state, e.why = stRetiring, ExitShutdown
		p.mu.Unlock()
		w.Stop(fmt.Errorf("%w: pool closed", worker.ErrStopped), p.cfg.StopGrace)
		return
	}
	p.failures, p.lastErr = 0, nil
	if gen != p.gen {
		// Started for the generation a reload replaced meanwhile: not handed out. Its
		// retirement starts a new-generation worker for whoever waited for it.
		stop := p.retireLocked(e, ExitReload, "replaced by a new generation (reload)")
		p.mu.Unlock()
		if stop {
			p.stop(e)
		}
		return
	}
	p.offerLocked(e)
	old := p.handedOverLocked() // its replacement is ready
	if old == nil {
		old = p.replacedLocked()
	}
	p.mu.Unlock()
	if old != nil {
		p.stop(old)
	}
}

// onExit runs on a worker's waiter goroutine after it has been reaped.
func (p *Pool) onExit(w *worker.Worker) {
	p.mu.Lock()
	e, ok := p.entries[w]
	if !ok {
		p.mu.Unlock()
		return // spawnOne has not registered it yet; it checks w.Err itself
	}
	delete(p.entries, w)
	p.exitedLocked(e)
	var stop []*entry
	switch e.state {
	case stWarming:
		stop = p.warmExitedLocked(e)
	case stIdle:
		p.removeIdleLocked(e)
		if e.checkouts == 0 && !errors.Is(w.Err(), worker.ErrStopped) {
			// A worker that dies idle before serving anything counts as a failed start,
			// so one that exits right after "ready" cannot cause a fork storm. (One that
			// was killed from outside after serving is simply replaced.)
			p.failedStartLocked(w.Err())
		}
	}
	p.maybeSpawnLocked()
	p.mu.Unlock()
	for _, x := range stop {
		p.stop(x)
	}
}

// failedStartLocked counts a failed start and sets the backoff before the next one,
// doubling from BackoffMin up to BackoffMax; it returns that backoff.
func (p *Pool) failedStartLocked(err error) time.Duration {
	p.failures++
	p.lastErr = err
	backoff := p.cfg.BackoffMin << min(p.failures-1, 20)
	if backoff > p.cfg.BackoffMax || backoff <= 0 {
		backoff = p.cfg.BackoffMax
	}
	p.backoffUntil = time.Now().Add(backoff)
	return backoff
}

// failWaitersLocked fails every waiting checkout with err and returns how many there were.
func (p *Pool) failWaitersLocked(err error) int {
	n := 0
	for p.waiters.Len() > 0 {
		wt := p.waiters.Remove(p.waiters.Front()).(*waiter)
		wt.elem = nil
		wt.ch <- result{err: err}
		n++
	}
	return n
}

func (p *Pool) removeIdleLocked(e *entry) {
	for i, x := range p.idle {
		if x == e {
			p.idle = append(p.idle[:i], p.idle[i+1:]...)
			p.unidleLocked(e)
			return
		}
	}
}

// reapIdle retires idle workers above MinIdle that have been idle for IdleTimeout. It runs
// with the cfg of its start until ctx ends (Close, or a Reconfigure that starts another).
func (p *Pool) reapIdle(ctx context.Context, cfg Config) {
	defer p.wg.Done()
	defer crash.OnPanic(p.log, "pool idle reaper")
	every := min(max(cfg.IdleTimeout/4, 10*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var retire []*entry
		p.mu.Lock()
		for len(p.idle) > p.cfg.MinIdle {
			e := p.idle[0] // the bottom of the stack has been idle longest
			if time.Since(e.idleSince) < cfg.IdleTimeout {
				break
			}
			p.idle = p.idle[1:]
			p.unidleLocked(e)
			if p.retireLocked(e, ExitIdleTimeout, "idle_timeout") {
				retire = append(retire, e)
			}
		}
		p.mu.Unlock()
		for _, e := range retire {
			p.stop(e)
		}
	}
}
