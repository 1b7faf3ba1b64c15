package pool

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/taskd-dev/taskd/internal/worker"
)

// Steering a running pool by hand (the daemon's admin requests): pausing checkouts, and
// retiring or killing one worker. The rule of pool.go holds here too: nothing slow under
// p.mu.

// ErrNoWorker is the error of RetireWorker and KillWorker when the pool has no worker of
// that id or pid.
var ErrNoWorker = errors.New("pool: no such worker")

// Pause refuses new checkouts with err (which must not be nil) and fails the waiting
// ones with it, until Resume. Held checkouts go on, and the pool keeps MinIdle workers
// ready, so that Resume serves at once. Unlike Drain it can be undone, and it aborts
// nothing: a Drain, Roll, Reconfigure or Close during a pause works as without it (Drain's
// error then wins). Pausing a paused pool replaces the error.
func (p *Pool) Pause(err error) {
	p.mu.Lock()
	p.paused = err
	p.failWaitersLocked(err)
	p.mu.Unlock()
}

// Scale sets MinIdle and MaxWorkers by hand, as Reconfigure would (the other fields kept);
// workers it retires by lowering MaxWorkers exit with ExitAdmin.
func (p *Pool) Scale(minIdle, maxWorkers int) {
	cfg := p.Config()
	cfg.MinIdle, cfg.MaxWorkers = minIdle, maxWorkers
	p.reconfigure(cfg, nil, shrinkByAdmin)
}

// Resume undoes Pause: new checkouts are served again. It returns false if the pool was
// not paused.
func (p *Pool) Resume() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	was := p.paused != nil
	p.paused = nil
	return was
}

// Config returns the pool's config as it is now (the live fields as last reconfigured).
func (p *Pool) Config() Config {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

// findLocked returns the registered worker whose id, or whose pid in decimal, is ref.
func (p *Pool) findLocked(ref string) *entry {
	pid, err := strconv.Atoi(ref)
	if err != nil {
		pid = 0
	}
	for w, e := range p.entries {
		if w.ID() == ref || (pid > 0 && w.PID() == pid) {
			return e
		}
	}
	return nil
}

// RetireWorker retires the worker whose id (such as "echo-3") or pid is ref, with exit
// reason ExitAdmin: an idle one now (its replacement started first when the pool needs
// one), a busy one when its checkout is released (busy is then true). It fails with
// ErrNoWorker if the pool has no such worker, and refuses a worker warming up for a new
// generation (it serves nothing yet). A worker already retiring is left to finish.
func (p *Pool) RetireWorker(ref string) (w *worker.Worker, busy bool, err error) {
	p.mu.Lock()
	e := p.findLocked(ref)
	if e == nil {
		p.mu.Unlock()
		return nil, false, ErrNoWorker
	}
	stopNow := false
	switch e.state {
	case stWarming:
		p.mu.Unlock()
		return e.w, false, fmt.Errorf("worker %s is warming up for a new generation and serves nothing yet: it cannot be retired, only killed", e.w.ID())
	case stBusy:
		e.retire, busy = true, true
	case stIdle:
		p.removeIdleLocked(e)
		stopNow = p.retireLocked(e, ExitAdmin, "retired by an admin request")
	}
	p.mu.Unlock()
	if stopNow {
		p.stop(e)
	}
	return e.w, busy, nil
}

// KillWorker kills the worker whose id or pid is ref now (SIGKILL to its process group),
// with exit reason ExitAdmin; cause says why. Its checkout, if it is busy (busy is then
// true), loses its worker. An idle worker is retired first, so that its replacement is
// started as for RetireWorker. It fails with ErrNoWorker if the pool has no such worker.
func (p *Pool) KillWorker(ref string, cause error) (w *worker.Worker, busy bool, err error) {
	p.mu.Lock()
	e := p.findLocked(ref)
	if e == nil {
		p.mu.Unlock()
		return nil, false, ErrNoWorker
	}
	e.killed = true
	switch e.state {
	case stBusy:
		busy = true
	case stIdle:
		p.removeIdleLocked(e)
		p.retireLocked(e, ExitAdmin, "killed by an admin request") // killed below, handed over or not
	}
	p.mu.Unlock()
	e.w.Kill(cause)
	return e.w, busy, nil
}
