package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// slots is Config.MaxWorkers for a Client of several daemons: the checkouts (and one-shot
// calls in progress) of all its daemons together, served first come, first served. Its
// backends have no cap of their own. Safe for concurrent use; its lock is a leaf (nothing
// else is locked under it, and nothing slow happens under it).
type slots struct {
	max     int // 0: no cap, and slots does nothing
	waiting atomic.Int64

	mu   sync.Mutex
	held int
	q    []chan struct{} // waiters, FIFO; a waiter's channel is closed when a slot is handed to it
}

// acquire waits for a slot until ctx is done. drop is called once if it has to wait:
// idle warm leases give their workers back, as with one daemon.
func (s *slots) acquire(ctx context.Context, iface string, drop func()) error {
	if s.max == 0 {
		return nil
	}
	s.mu.Lock()
	if s.held < s.max && len(s.q) == 0 {
		s.held++
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	s.q = append(s.q, ch)
	s.mu.Unlock()
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	drop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	i := slices.Index(s.q, ch)
	if i >= 0 {
		s.q = slices.Delete(s.q, i, i+1)
	}
	s.mu.Unlock()
	if i < 0 {
		s.release() // handed over just as the caller gave up: the next one gets it
	}
	return fmt.Errorf("client: checkout of %q: %w waiting for one of the MaxWorkers=%d checkouts this client may hold on all its daemons together (release checkouts sooner, or raise MaxWorkers)", iface, ctx.Err(), s.max)
}

// release gives a slot back: to the first waiter, if any.
func (s *slots) release() {
	if s.max == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.q) > 0 {
		close(s.q[0])
		s.q = s.q[1:]
		return
	}
	s.held--
}
