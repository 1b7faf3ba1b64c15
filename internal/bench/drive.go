package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Op makes calls for one caller: at least one and at most max (more than one when the
// caller pipelines), records the latency of each in rec, and returns how many it made. An
// error stops the whole run.
type Op func(ctx context.Context, max int, rec *Histogram) (int, error)

// Setup prepares caller i (0-based), for example by checking out a worker, and returns its
// Op and a cleanup that Drive runs after the measurement (nil if there is nothing to undo).
type Setup func(ctx context.Context, i int) (Op, func(), error)

// Plan says how much load Drive generates.
type Plan struct {
	Callers  int           // concurrent callers, each with its own Op; at least 1
	Calls    int64         // stop after this many calls in all; 0 means run for Duration
	Duration time.Duration // how long to run when Calls is 0; with Calls, an upper bound (0 = none)
	Batch    int           // the most calls one Op invocation may make (pipelining); 0 means 1

	// Progress, if set, is called every ProgressEvery (default 1s) while the callers run,
	// from a goroutine owned by Drive, with the calls completed so far.
	Progress      func(calls int64, elapsed time.Duration)
	ProgressEvery time.Duration

	// OnStart and OnStop, if set, are called right before the callers start and right
	// after the last one has finished (after every Setup, before any cleanup): the
	// measured window, for example to sample CPU time.
	OnStart, OnStop func()
}

// Result is what Drive measured.
type Result struct {
	Calls       int64         // calls completed
	Elapsed     time.Duration // from the start of the callers until the last one finished
	Latency     Histogram     // the latency of every completed call
	Interrupted bool          // ctx ended the run early
}

// CallsPerSec returns the throughput.
func (r *Result) CallsPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Calls) / r.Elapsed.Seconds()
}

// Drive runs plan.Callers callers, each set up with setup, until plan.Calls calls are done
// or plan.Duration has passed, whichever the plan asks for, and returns the throughput and
// latencies. The callers start together, after all of them are set up.
//
// Setup gets ctx itself. Ops get a context that is not cancelled with ctx: when ctx ends,
// no new calls start, but calls in flight are allowed to finish (a cancelled call would
// cost the checkout its worker), and Drive returns what was measured with Interrupted
// set. The first error of an Op stops the run and is returned along with the result so
// far.
func Drive(ctx context.Context, plan Plan, setup Setup) (Result, error) {
	if plan.Callers < 1 {
		return Result{}, fmt.Errorf("bench: %d callers: want at least 1", plan.Callers)
	}
	if plan.Calls == 0 && plan.Duration <= 0 {
		return Result{}, errors.New("bench: a plan needs a number of calls or a duration")
	}
	batch := max(plan.Batch, 1)
	opCtx := context.WithoutCancel(ctx)

	ops := make([]Op, plan.Callers)
	var cleanups []func()
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	for i := range ops {
		op, cleanup, err := setup(ctx, i)
		if err != nil {
			return Result{}, fmt.Errorf("setting up caller %d: %w", i+1, err)
		}
		ops[i] = op
		if cleanup != nil {
			cleanups = append(cleanups, cleanup)
		}
	}

	var (
		stop      atomic.Bool
		done      atomic.Int64
		remaining atomic.Int64
		errOnce   sync.Once
		firstErr  error
	)
	remaining.Store(plan.Calls)
	// claim reserves up to want calls of the plan's total; 0 means none are left.
	claim := func(want int) int {
		if plan.Calls == 0 {
			return want
		}
		for {
			left := remaining.Load()
			if left <= 0 {
				return 0
			}
			n := min(int64(want), left)
			if remaining.CompareAndSwap(left, left-n) {
				return int(n)
			}
		}
	}

	hists := make([]*Histogram, plan.Callers)
	for i := range hists {
		hists[i] = new(Histogram)
	}
	stopCtx := context.AfterFunc(ctx, func() { stop.Store(true) })
	defer stopCtx()

	if plan.OnStart != nil {
		plan.OnStart()
	}
	start := time.Now()
	if plan.Duration > 0 {
		t := time.AfterFunc(plan.Duration, func() { stop.Store(true) })
		defer t.Stop()
	}

	var progressWG sync.WaitGroup
	progressDone := make(chan struct{})
	if plan.Progress != nil {
		every := plan.ProgressEvery
		if every <= 0 {
			every = time.Second
		}
		progressWG.Add(1)
		go func() {
			defer progressWG.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-progressDone:
					return
				case <-tick.C:
					plan.Progress(done.Load(), time.Since(start))
				}
			}
		}()
	}

	var wg sync.WaitGroup
	for i, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				n := claim(batch)
				if n == 0 {
					return
				}
				got, err := op(opCtx, n, hists[i])
				done.Add(int64(got))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	res := Result{Calls: done.Load(), Elapsed: time.Since(start), Interrupted: ctx.Err() != nil}
	if plan.OnStop != nil {
		plan.OnStop()
	}
	close(progressDone)
	progressWG.Wait()
	for _, h := range hists {
		res.Latency.Merge(h)
	}
	return res, firstErr
}
