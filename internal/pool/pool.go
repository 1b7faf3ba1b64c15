package pool

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/worker"
)

// Errors returned by Acquire. ErrUnavailable is matched by *UnavailableError.
var (
	ErrOverloaded   = errors.New("pool: overloaded: max_queue checkouts are already waiting")
	ErrUnavailable  = errors.New("pool: interface unavailable: its worker cannot start")
	ErrShuttingDown = errors.New("pool: shutting down: no new checkouts")
)

// UnavailableError reports that the interface's workers cannot start; Err is the last
// start failure (a *worker.StartError with the stderr tail).
type UnavailableError struct {
	Interface string
	Err       error
	RetryIn   time.Duration
}

func (e *UnavailableError) Error() string {
	s := fmt.Sprintf("interface %q unavailable: %v", e.Interface, e.Err)
	if e.RetryIn > 0 {
		s += fmt.Sprintf(" (next start attempt in %s; fix the worker or its config)", e.RetryIn.Round(time.Millisecond))
	}
	return s
}

func (e *UnavailableError) Unwrap() []error { return []error{ErrUnavailable, e.Err} }

// Spawner starts one worker with the given id. It must pass onExit to the worker (as
// worker.Config.OnExit) so that the pool learns of its exit.
type Spawner func(ctx context.Context, id string, onExit func(*worker.Worker)) (*worker.Worker, error)

// Config sizes a pool. Zero values get the defaults noted. Reconfigure changes the fields
// marked "live" on a running pool; the others are fixed at New.
type Config struct {
	Name         string
	MinIdle      int           // live
	MaxWorkers   int           // live; default 1
	MaxQueue     int           // live; waiting checkouts beyond this are refused; default 1000
	MaxCheckouts int           // live; retire after this many checkouts; 0 = never
	IdleTimeout  time.Duration // live; retire idle workers above MinIdle after this; <= 0 = never
	// CallTimeout is given to the running workers by Reconfigure (worker.SetCallTimeout);
	// new workers get theirs from the Spawner. Not used by New.
	CallTimeout time.Duration
	// CancelGrace is given to the running workers by Reconfigure (worker.SetCancelGrace),
	// like CallTimeout. Not used by New.
	CancelGrace time.Duration
	// Stderr is given to the running workers by Reconfigure (worker.SetStderrLimit); new
	// workers get theirs from the Spawner. Not used by New.
	Stderr     worker.StderrLimit
	StopGrace  time.Duration // retiring: EOF, then SIGTERM after this, then SIGKILL; default 2s
	BackoffMin time.Duration // first respawn delay after a failed start; default 100ms
	BackoffMax time.Duration // cap; default 5s
	Logger     *zap.Logger

	// Recycling by age and memory (recycle.go). Each worker gets its own limits, drawn
	// between limit·(1−RecycleJitter) and limit. A worker is retired when idle or at
	// release, never during a checkout. All live.
	MaxAge        time.Duration // retire a worker this long after it became ready; <= 0 = never
	MaxRSS        int64         // retire a worker whose process tree's RSS exceeds this; <= 0 = never
	RecycleJitter float64       // 0 = every worker gets the limit itself; below 1
	SampleEvery   time.Duration // how often MaxRSS is sampled from /proc; default 2s
}

type state int

const (
	stIdle state = iota
	stBusy
	stRetiring
	stWarming // a new generation's, ready, waiting to take over (generation.go)
)

func (s state) String() string {
	return [...]string{"idle", "busy", "retiring", "warming"}[s]
}

type entry struct {
	w         *worker.Worker
	state     state
	checkouts int
	idleSince time.Time
	why       ExitReason    // why it was retired (state stRetiring)
	reason    string        // the same, for the log and the worker's stop cause
	counted   bool          // counted in Pool.retiring: out of the MaxWorkers cap (retiring, or busy of an old generation)
	readyAt   time.Time     // set once, before the entry is registered
	gen       int           // the generation it was started for (generation.go)
	maxAge    time.Duration // this worker's MaxAge, jittered; set with readyAt
	maxRSS    int64         // this worker's MaxRSS, jittered; set with readyAt
	overRSS   bool          // the sampler saw it over maxRSS while it was busy: retire at release
	// doomed: recycled (max_age, max_rss) while idle, it serves on until a replacement is
	// ready, out of the MaxWorkers cap (counted); see recycleIdleLocked.
	doomed bool
	// retire: an admin request (RetireWorker) asked for it to be retired at release;
	// killed: KillWorker killed it (its exit counts under ExitAdmin). See admin.go.
	retire, killed bool
}

type result struct {
	lease *Lease
	err   error
}

type waiter struct {
	ch   chan result // capacity 1: the one hand-off never blocks
	elem *list.Element
}

// Pool is the pool of one interface. Create it with New, stop it with Close.
type Pool struct {
	log *zap.Logger

	ctx    context.Context // cancelled by Close: abandons spawns in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup // spawn goroutines, the idle reaper and the recycler

	mu sync.Mutex
	// cfg: the fields that Reconfigure changes are read under mu only (or from a copy
	// taken under it); the others are fixed.
	cfg          Config
	spawn        Spawner            // starts workers of generation gen
	gen          int                // the current generation: 1, then one more per Roll
	pending      *rollout           // a new generation warming up (generation.go), or nil
	shrunkBy     shrink             // who last lowered MaxWorkers: the exit reason of the workers above it
	bgStop       context.CancelFunc // stops the idle reaper and the recycler of the current cfg
	drainErr     error              // what Acquire fails with once draining
	entries      map[*worker.Worker]*entry
	idle         []*entry // LIFO: the top is the most recently used
	waiters      list.List
	starting     int
	draining     bool
	paused       error // set by Pause (admin.go): what Acquire fails with until Resume
	closed       bool
	nextID       uint64
	failures     int
	lastErr      error
	backoffUntil time.Time
	retry        *time.Timer
	checkouts    uint64
	spawns       uint64
	spawnFails   uint64
	leased       int             // leases not yet released
	idleWaiters  []chan struct{} // WaitIdle callers, closed when leased drops to 0
	retiring     int             // registered workers out of the MaxWorkers cap: retiring, or busy of a replaced generation
	handover     []*entry        // retiring workers kept running until a start ends (recycle.go)
	doomed       int             // doomed entries in idle
	exits        [NumExitReasons]uint64

	calls atomic.Uint64 // calls sent to workers of the pool (Lease.CountCall); not guarded by mu
}

// New creates a pool and starts its MinIdle workers in the background.
func New(cfg Config, spawn Spawner) *Pool {
	cfg = cfg.withDefaults()
	p := &Pool{cfg: cfg, spawn: spawn, gen: 1, shrunkBy: shrinkByReload, log: cfg.Logger.With(zap.String("interface", cfg.Name)),
		entries: make(map[*worker.Worker]*entry)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.mu.Lock()
	p.maybeSpawnLocked()
	p.startBackgroundLocked()
	p.mu.Unlock()
	return p
}

// startBackgroundLocked starts the idle reaper and the recycler that the current cfg
// needs, each with its own copy of cfg, after stopping those of the previous cfg.
func (p *Pool) startBackgroundLocked() {
	if p.bgStop != nil {
		p.bgStop()
	}
	ctx, stop := context.WithCancel(p.ctx)
	p.bgStop = stop
	cfg := p.cfg
	if cfg.IdleTimeout > 0 {
		p.wg.Add(1)
		go p.reapIdle(ctx, cfg)
	}
	if cfg.MaxAge > 0 || cfg.MaxRSS > 0 {
		p.wg.Add(1)
		go p.recycle(ctx, cfg)
	}
}

// Lease is one checkout of a worker. Release it exactly once (later calls do nothing).
type Lease struct {
	p        *Pool
	e        *entry
	n        int
	spare    int // Spare's figure, taken when the worker was leased
	released atomic.Bool
}

// Worker returns the leased worker.
func (l *Lease) Worker() *worker.Worker { return l.e.w }

// CountCall counts a call sent to the leased worker, for Stats.Calls. It takes no lock
// and does not allocate: it is called once per call.
func (l *Lease) CountCall() { l.p.calls.Add(1) }

// CountCalls counts n calls made on the leased worker over a direct lease (read from its
// stats page when the lease ended), for Stats.Calls.
func (l *Lease) CountCalls(n uint64) { l.p.calls.Add(n) }

// Checkouts returns how many checkouts the worker has served, this one included.
func (l *Lease) Checkouts() int { return l.n }

// Spare returns the pool's spare workers just after this lease was granted: its idle
// workers, less the checkouts that were still waiting for one (negative when more wait
// than are idle). taskd tells clients of several daemons (granted's spare), which weigh
// their choice of daemon by it.
func (l *Lease) Spare() int { return l.spare }

// Release returns the worker to the pool, or retires it if retire is set, the worker asked
// for it (bye), it has served MaxCheckouts, reached its MaxAge or exceeded its MaxRSS, or it
// is dead. A retired worker's replacement is started first when the pool needs one.
// Telling the worker that its checkout is over ("done") is the holder's business, before
// Release.
func (l *Lease) Release(retire bool) {
	if l.released.Swap(true) {
		return
	}
	l.p.release(l.e, retire)
}

// Acquire waits for a worker, first in, first out. It fails at once with ErrOverloaded when
// MaxQueue checkouts are waiting, with an *UnavailableError when the worker cannot start,
// with Drain's error after Drain, and with Pause's error while paused.
func (p *Pool) Acquire(ctx context.Context) (*Lease, error) {
	for {
		if l := p.TryAcquire(); l != nil {
			return l, nil
		}
		p.mu.Lock()
		if p.draining {
			p.mu.Unlock()
			return nil, p.drainErr
		}
		if p.paused != nil {
			p.mu.Unlock()
			return nil, p.paused
		}
		if len(p.idle) > 0 && p.waiters.Len() == 0 {
			p.mu.Unlock()
			continue // a worker came back meanwhile
		}
		if err := p.unavailableLocked(); err != nil {
			p.mu.Unlock()
			return nil, err
		}
		if p.waiters.Len() >= p.cfg.MaxQueue {
			p.mu.Unlock()
			return nil, ErrOverloaded
		}
		w := &waiter{ch: make(chan result, 1)}
		w.elem = p.waiters.PushBack(w)
		p.maybeSpawnLocked()
		p.mu.Unlock()

		select {
		case r := <-w.ch:
			return r.lease, r.err
		case <-ctx.Done():
			p.mu.Lock()
			if w.elem != nil {
				p.waiters.Remove(w.elem)
				w.elem = nil
				p.mu.Unlock()
				return nil, ctx.Err()
			}
			p.mu.Unlock()
			// Handed off concurrently: give the worker back.
			if r := <-w.ch; r.lease != nil {
				r.lease.Release(false)
			}
			return nil, ctx.Err()
		}
	}
}

// TryAcquire returns an idle worker at once if there is one and nobody is waiting ahead
// of the caller; otherwise it returns nil, and the caller should Acquire.
func (p *Pool) TryAcquire() *Lease {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if p.draining || p.paused != nil || n == 0 || p.waiters.Len() > 0 {
			p.mu.Unlock()
			return nil
		}
		e := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.unidleLocked(e)
		l := p.leaseLocked(e)
		p.mu.Unlock()
		// Outside the lock: ask the kernel whether the process died while idle (the
		// waiter may not have noticed yet), and whether the worker asked to be retired
		// after it was released (a bye that came after the checkout's last reply). Such
		// a worker is dropped; try again.
		alive := e.w.Alive()
		if alive && !e.w.ByeRequested() {
			return l
		}
		p.mu.Lock()
		p.checkouts--
		p.unleaseLocked()
		stop := p.retireLocked(e, ExitBye, "worker sent bye while idle")
		p.mu.Unlock()
		if alive && stop {
			p.stop(e)
		}
	}
}

// unavailableAfter is how many starts in a row must fail before checkouts that nothing
// else can serve fail with an *UnavailableError.
const unavailableAfter = 2

// unavailableLocked fails a checkout at once while the interface is backing off after
// failed starts and nothing else could serve it.
func (p *Pool) unavailableLocked() error {
	if p.lastErr == nil || p.starting > 0 || len(p.entries) > 0 || p.failures < unavailableAfter {
		return nil
	}
	wait := time.Until(p.backoffUntil)
	if wait <= 0 {
		return nil
	}
	return &UnavailableError{Interface: p.cfg.Name, Err: p.lastErr, RetryIn: wait}
}

func (p *Pool) leaseLocked(e *entry) *Lease {
	e.state = stBusy
	e.checkouts++
	p.checkouts++
	p.leased++
	return &Lease{p: p, e: e, n: e.checkouts, spare: len(p.idle) - p.waiters.Len()}
}

// offerLocked gives an available worker to the first waiter, or makes it idle.
func (p *Pool) offerLocked(e *entry) {
	if front := p.waiters.Front(); front != nil {
		w := p.waiters.Remove(front).(*waiter)
		w.elem = nil
		w.ch <- result{lease: p.leaseLocked(e)}
		return
	}
	e.state = stIdle
	e.idleSince = time.Now()
	p.idle = append(p.idle, e)
}

func (p *Pool) release(e *entry, retire bool) {
	w := e.w
	why, reason := ExitReleased, "released with retire"
	p.mu.Lock()
	p.unleaseLocked()
	switch {
	case p.closed:
		retire, why, reason = true, ExitShutdown, "pool closed"
	case e.retire:
		retire, why, reason = true, ExitAdmin, "retired by an admin request"
	case retire:
	case w.ByeRequested():
		retire, why, reason = true, ExitBye, "worker sent bye"
	case p.cfg.MaxCheckouts > 0 && e.checkouts >= p.cfg.MaxCheckouts:
		retire, why, reason = true, ExitMaxCheckouts, "served max_checkouts"
	case e.maxAge > 0 && time.Since(e.readyAt) >= e.maxAge:
		retire, why, reason = true, ExitMaxAge, "reached max_age"
	case w.Err() != nil:
		retire, why, reason = true, ExitCrashed, "worker exited"
	case e.overRSS:
		retire, why, reason = true, ExitMaxRSS, "exceeded max_rss"
	case e.gen != p.gen:
		retire, why, reason = true, ExitReload, "replaced by a new generation (reload)"
	case p.servingLocked() > p.cfg.MaxWorkers:
		retire, why, reason = true, p.shrunkBy.why, p.shrunkBy.reason
	}
	if retire {
		stop := p.retireLocked(e, why, reason)
		p.mu.Unlock()
		if stop {
			p.stop(e)
		}
		return
	}
	p.offerLocked(e)
	p.mu.Unlock()
}

// Wanted reports whether the pool would rather have the leased worker back now: a
// checkout waits for a worker, the pool is paused, drains or has closed, or the worker is due to
// be retired at its release (by release's rules: an admin asked, max_checkouts, max_age,
// max_rss, an older generation, fewer max_workers). A holder that keeps a lease only for
// its own convenience (a warm lease) gives it back then. Safe for concurrent use.
func (l *Lease) Wanted() bool {
	p, e := l.p, l.e
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waiters.Len() > 0 || p.paused != nil || p.draining || p.closed || e.retire || e.overRSS || e.gen != p.gen ||
		(p.cfg.MaxCheckouts > 0 && e.checkouts >= p.cfg.MaxCheckouts) ||
		(e.maxAge > 0 && time.Since(e.readyAt) >= e.maxAge) || p.servingLocked() > p.cfg.MaxWorkers
}

// Drain refuses new checkouts with err (ErrShuttingDown if nil) and fails the waiting ones
// with it. Held checkouts continue; see Busy and WaitIdle. Only the first Drain's error is
// kept.
func (p *Pool) Drain(err error) {
	if err == nil {
		err = ErrShuttingDown
	}
	p.mu.Lock()
	if !p.draining {
		p.draining, p.drainErr = true, err
	}
	stop := p.abortRollLocked(p.drainErr)
	p.failWaitersLocked(p.drainErr)
	p.mu.Unlock()
	p.stopAll(stop)
}

// Busy returns the number of checked-out workers.
func (p *Pool) Busy() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leased
}

// Close drains the pool, stops every worker (EOF, SIGTERM, SIGKILL to its group, StopGrace
// apart), and waits until all are reaped and the pool's goroutines have returned. Held
// checkouts lose their worker. Close is idempotent.
func (p *Pool) Close() {
	p.Drain(nil)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return
	}
	p.closed = true
	if p.retry != nil && p.retry.Stop() {
		p.wg.Done() // it will not run
	}
	p.retry = nil
	p.cancel()
	stop := make([]*worker.Worker, 0, len(p.entries))
	for w, e := range p.entries {
		if e.state != stRetiring {
			e.state, e.why = stRetiring, ExitShutdown
		}
		stop = append(stop, w)
	}
	p.idle, p.doomed = nil, 0
	p.handover = nil // stopped below with the rest
	p.mu.Unlock()
	for _, w := range stop {
		w.Stop(fmt.Errorf("%w: shutting down", worker.ErrStopped), p.cfg.StopGrace)
	}
	p.wg.Wait() // spawns in progress end (their workers are stopped as they come in)
	for _, w := range stop {
		<-w.Exited()
	}
	// Workers that a spawn registered after the snapshot above.
	for {
		p.mu.Lock()
		var rest []*worker.Worker
		for w := range p.entries {
			rest = append(rest, w)
		}
		p.mu.Unlock()
		if len(rest) == 0 {
			return
		}
		for _, w := range rest {
			w.Stop(fmt.Errorf("%w: shutting down", worker.ErrStopped), p.cfg.StopGrace)
			<-w.Exited()
		}
		p.mu.Lock()
		for _, w := range rest {
			// Exited is closed before the worker's onExit runs: count the exit here if
			// onExit has not, so that Stats is final when Close returns.
			if e, ok := p.entries[w]; ok {
				delete(p.entries, w)
				p.exitedLocked(e)
			}
		}
		p.mu.Unlock()
	}
}
