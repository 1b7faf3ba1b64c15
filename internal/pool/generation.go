package pool

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Changing a running pool (a reload): Reconfigure applies the pool's own keys in place;
// Roll replaces its workers by a new generation, which takes over only once it is ready.
// The rule of pool.go holds here too: nothing slow under p.mu.
//
// A roll, step by step:
//
//  1. Roll starts MinIdle workers of the new generation ("warming": registered, outside
//     MaxWorkers, serving nothing). The current generation serves every checkout
//     meanwhile, so the roll costs no capacity.
//  2. When the last of them is ready, the new generation takes over (switchLocked): they
//     are offered to the waiting checkouts or made idle, the old idle workers retire at
//     once, and the old busy ones retire at release. Workers the old generation was still
//     starting retire as they become ready. Every later checkout gets a new worker.
//  3. If one of them fails to start, or exits before the take-over, the roll is abandoned
//     (abortRollLocked): its workers stop, and the current generation goes on as before.

// rollout is a new generation warming up: p.pending until it takes over or is abandoned.
type rollout struct {
	gen      int
	spawn    Spawner
	want     int      // workers to have ready before the take-over
	starting int      // of want: spawns in progress
	ready    []*entry // of want: ready, state stWarming
	err      error    // why it was abandoned; set before done is closed
	done     chan struct{}
}

// withDefaults returns cfg with its zero values replaced by the defaults Config documents.
func (cfg Config) withDefaults() Config {
	if cfg.MaxWorkers <= 0 {
		cfg.MaxWorkers = 1
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1000
	}
	cfg.MinIdle = min(cfg.MinIdle, cfg.MaxWorkers)
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 2 * time.Second
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 5 * time.Second
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return cfg
}

// Reconfigure applies the live fields of cfg (see Config) without restarting a worker,
// and, if spawn is not nil, starts the current generation's later workers with it (new
// setup or call timeouts, say). Lowering MaxWorkers retires idle workers above it at once
// and busy ones at release; raising MinIdle starts workers; new recycling limits are drawn
// again for every worker; CallTimeout, CancelGrace and Stderr are given to every running worker.
func (p *Pool) Reconfigure(cfg Config, spawn Spawner) {
	p.reconfigure(cfg, spawn, shrinkByReload)
}

// shrink says who lowered MaxWorkers last, for the exits of the workers it retires.
type shrink struct {
	why    ExitReason
	reason string
}

var (
	shrinkByReload = shrink{ExitReload, "max_workers lowered by a reload"}
	shrinkByAdmin  = shrink{ExitAdmin, "max_workers lowered by an admin (scale)"}
)

// reconfigure is Reconfigure, with by the one who changed cfg.
func (p *Pool) reconfigure(cfg Config, spawn Spawner, by shrink) {
	cfg = cfg.withDefaults()
	p.mu.Lock()
	old := p.cfg
	if cfg.MaxWorkers < old.MaxWorkers {
		p.shrunkBy = by
	}
	p.cfg.MinIdle, p.cfg.MaxWorkers, p.cfg.MaxQueue = cfg.MinIdle, cfg.MaxWorkers, cfg.MaxQueue
	p.cfg.MaxCheckouts, p.cfg.IdleTimeout, p.cfg.CallTimeout = cfg.MaxCheckouts, cfg.IdleTimeout, cfg.CallTimeout
	p.cfg.CancelGrace = cfg.CancelGrace
	p.cfg.MaxAge, p.cfg.MaxRSS, p.cfg.RecycleJitter = cfg.MaxAge, cfg.MaxRSS, cfg.RecycleJitter
	p.cfg.Stderr = cfg.Stderr
	if spawn != nil {
		p.spawn = spawn
	}
	if p.closed {
		p.mu.Unlock()
		return
	}
	var workers []*worker.Worker
	for _, e := range p.entries {
		if e.state == stRetiring {
			continue
		}
		if cfg.MaxAge != old.MaxAge || cfg.MaxRSS != old.MaxRSS || cfg.RecycleJitter != old.RecycleJitter {
			p.limitLocked(e)
		}
		workers = append(workers, e.w)
	}
	if cfg.IdleTimeout != old.IdleTimeout || cfg.MaxAge != old.MaxAge || cfg.MaxRSS != old.MaxRSS {
		p.startBackgroundLocked()
	}
	var stop []*entry
	for p.servingLocked() > p.cfg.MaxWorkers && len(p.idle) > 0 {
		e := p.idle[0] // idle longest
		p.idle = p.idle[1:]
		p.unidleLocked(e)
		if p.retireLocked(e, p.shrunkBy.why, p.shrunkBy.reason) {
			stop = append(stop, e)
		}
	}
	if cfg.MinIdle != old.MinIdle || cfg.MaxWorkers != old.MaxWorkers {
		p.maybeSpawnLocked()
	}
	p.mu.Unlock()
	for _, w := range workers {
		if cfg.CallTimeout != old.CallTimeout {
			w.SetCallTimeout(cfg.CallTimeout)
		}
		if cfg.Stderr != old.Stderr {
			w.SetStderrLimit(cfg.Stderr)
		}
	}
	if cfg.CancelGrace != old.CancelGrace {
		for _, w := range workers {
			w.SetCancelGrace(cfg.CancelGrace)
		}
	}
	p.stopAll(stop)
}

// Roll replaces the pool's workers by a new generation started with spawn, as the
// comment at the top of this file tells. It returns when the new generation has taken
// over, with its number, or when the roll was abandoned, with the current generation's
// number and why: a worker of the new generation failed to start or exited, the pool
// was drained, or ctx ended. It must not be called again before it returns.
func (p *Pool) Roll(ctx context.Context, spawn Spawner) (gen int, err error) {
	p.mu.Lock()
	if p.draining {
		defer p.mu.Unlock()
		return p.gen, p.drainErr
	}
	stop := p.abortRollLocked(fmt.Errorf("replaced by a newer roll"))
	r := &rollout{gen: p.gen + 1, spawn: spawn, want: p.cfg.MinIdle, done: make(chan struct{})}
	p.pending = r
	if r.want == 0 {
		stop = append(stop, p.switchLocked(r)...)
	}
	for range r.want {
		p.nextID++
		p.spawns++
		r.starting++
		id := fmt.Sprintf("%s-%d", p.cfg.Name, p.nextID)
		p.wg.Add(1)
		go p.spawnWarm(r, id)
	}
	p.mu.Unlock()
	p.stopAll(stop)
	stop = nil

	select {
	case <-r.done:
	case <-ctx.Done():
		p.mu.Lock()
		if p.pending == r {
			stop = p.abortRollLocked(fmt.Errorf("gave up waiting for the new generation to start: %w", ctx.Err()))
		}
		p.mu.Unlock()
		p.stopAll(stop)
		<-r.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen, r.err
}

// Generation returns the current generation: 1 until a Roll succeeds.
func (p *Pool) Generation() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// spawnWarm starts one worker of rollout r, and makes r take over when it is the last
// one r waits for.
func (p *Pool) spawnWarm(r *rollout, id string) {
	defer p.wg.Done()
	defer crash.OnPanic(p.log, "pool spawn")
	w, err := r.spawn(p.ctx, id, p.onExit)
	p.mu.Lock()
	r.starting--
	if err == nil && w.Err() != nil {
		err = w.Err() // it exited between ready and now (not registered: see spawnOne)
	}
	if err != nil {
		p.spawnFails++
		var stop []*entry
		if p.pending == r {
			stop = p.abortRollLocked(err)
		}
		p.mu.Unlock()
		p.stopAll(stop)
		if p.ctx.Err() == nil {
			p.log.Error("worker of the new generation failed to start; the current generation goes on",
				zap.String("worker", id), zap.Int("generation", r.gen), zap.Error(err))
		}
		return
	}
	e := p.newEntry(w, r.gen)
	p.entries[w] = e
	if p.pending != r {
		p.discardLocked(e, "its generation was abandoned: "+r.err.Error())
		p.mu.Unlock()
		p.stop(e)
		return
	}
	e.state = stWarming
	r.ready = append(r.ready, e)
	var stop []*entry
	if len(r.ready) == r.want {
		stop = p.switchLocked(r)
	}
	p.mu.Unlock()
	p.stopAll(stop)
}

// switchLocked makes rollout r the current generation and returns the old idle workers,
// retired, for the caller to stop.
func (p *Pool) switchLocked(r *rollout) []*entry {
	p.pending = nil
	p.gen, p.spawn = r.gen, r.spawn
	p.failures, p.lastErr, p.backoffUntil = 0, nil, time.Time{} // the old generation's failures
	for _, e := range r.ready {
		p.offerLocked(e)
	}
	var stop []*entry
	for _, e := range slices.Clone(p.idle) {
		if e.gen != p.gen {
			p.removeIdleLocked(e)
			if p.retireLocked(e, ExitReload, "replaced by a new generation (reload)") {
				stop = append(stop, e)
			}
		}
	}
	// The old busy workers retire at release: from now on they are out of the MaxWorkers
	// cap, as the new ones took their places.
	for _, e := range p.entries {
		if e.gen != p.gen && e.state == stBusy && !e.counted {
			e.counted = true
			p.retiring++
		}
	}
	close(r.done)
	p.log.Info("new generation took over", zap.Int("generation", r.gen), zap.Int("ready", len(r.ready)))
	return stop
}

// abortRollLocked abandons the rollout in progress, if any, for err, and returns its
// ready workers, retired, for the caller to stop. Its workers still starting are stopped
// as they become ready (spawnWarm).
func (p *Pool) abortRollLocked(err error) []*entry {
	r := p.pending
	if r == nil {
		return nil
	}
	p.pending = nil
	r.err = err
	for _, e := range r.ready {
		p.discardLocked(e, "its generation was abandoned: "+err.Error())
	}
	close(r.done)
	return r.ready
}

// warmExitedLocked handles the exit of a warming worker (already unregistered): its
// rollout is abandoned. It returns the workers for the caller to stop.
func (p *Pool) warmExitedLocked(e *entry) []*entry {
	r := p.pending
	if r == nil {
		return nil
	}
	if i := slices.Index(r.ready, e); i >= 0 {
		r.ready = slices.Delete(r.ready, i, i+1)
	}
	return p.abortRollLocked(fmt.Errorf("worker %s (pid %d) of the new generation exited before it took over: %w",
		e.w.ID(), e.w.PID(), e.w.Err()))
}

// discardLocked retires a worker that never served (a warming worker of an abandoned
// rollout) without starting a replacement: the caller stops it.
func (p *Pool) discardLocked(e *entry, reason string) {
	if e.state == stRetiring {
		return
	}
	e.state, e.why, e.reason = stRetiring, ExitReload, reason
	if p.entries[e.w] == e && !e.counted {
		e.counted = true
		p.retiring++
	}
}

// stopAll stops retired workers (outside the lock).
func (p *Pool) stopAll(es []*entry) {
	for _, e := range es {
		p.stop(e)
	}
}
