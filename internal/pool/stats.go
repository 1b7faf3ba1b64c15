package pool

import (
	"context"
	"slices"

	"github.com/taskd-dev/taskd/internal/worker"
)

// Stats is a snapshot of a pool, for status reports and metrics. The daemon converts it
// to the client protocol's status in one place; nothing here is copied from the worker.
type Stats struct {
	Name          string
	Live          int // workers started and not yet reaped (idle, busy and retiring)
	Retiring      int // of Live: out of the MaxWorkers cap: retiring, or busy of a replaced generation (retired at release)
	Idle          int
	Busy          int
	Starting      int
	Queued        int
	MinIdle       int
	MaxWorkers    int
	Generation    int  // the current generation (see Roll)
	Paused        bool // Pause was called, and Resume not since: new checkouts are refused
	Checkouts     uint64
	Calls         uint64 // calls sent to its workers (Lease.CountCall)
	Spawns        uint64
	SpawnFailures uint64
	LastError     string                 // the last failed start; cleared when a worker starts
	Exits         [NumExitReasons]uint64 // workers ended, by reason (index: ExitReason)
	Workers       []WorkerStats          // oldest first
}

// WorkerStats describes one worker in Stats: the worker's own snapshot as it gave it,
// and what the pool knows of it.
type WorkerStats struct {
	worker.Info
	State     string // "idle", "busy", "retiring" or "warming" (a new generation's, before it takes over)
	Gen       int    // the generation it was started for
	Checkouts int    // checkouts served, the current one included
}

// Stats returns a snapshot.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	s := Stats{Name: p.cfg.Name, Live: len(p.entries), Retiring: p.retiring, Idle: len(p.idle), Starting: p.starting,
		Queued: p.waiters.Len(), MinIdle: p.cfg.MinIdle, MaxWorkers: p.cfg.MaxWorkers,
		Checkouts: p.checkouts, Spawns: p.spawns, SpawnFailures: p.spawnFails, Exits: p.exits,
		Generation: p.gen, Calls: p.calls.Load(), Paused: p.paused != nil}
	if p.lastErr != nil {
		s.LastError = p.lastErr.Error()
	}
	type snap struct {
		e     *entry
		state state
		n     int
		gen   int
	}
	s.Busy = p.leased
	snaps := make([]snap, 0, len(p.entries))
	for _, e := range p.entries {
		snaps = append(snaps, snap{e, e.state, e.checkouts, e.gen})
	}
	p.mu.Unlock()
	s.Workers = make([]WorkerStats, 0, len(snaps))
	for _, x := range snaps {
		s.Workers = append(s.Workers, WorkerStats{Info: x.e.w.Info(), State: x.state.String(), Checkouts: x.n, Gen: x.gen})
	}
	slices.SortFunc(s.Workers, func(a, b WorkerStats) int { return a.Started.Compare(b.Started) })
	return s
}

// unleaseLocked counts a lease as given back and wakes WaitIdle when none is left.
func (p *Pool) unleaseLocked() {
	p.leased--
	if p.leased == 0 {
		for _, ch := range p.idleWaiters {
			close(ch)
		}
		p.idleWaiters = nil
	}
}

// WaitIdle waits until no checkout of this pool is held, or ctx ends (then it returns
// ctx's error).
func (p *Pool) WaitIdle(ctx context.Context) error {
	p.mu.Lock()
	if p.leased == 0 {
		p.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	p.idleWaiters = append(p.idleWaiters, ch)
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
