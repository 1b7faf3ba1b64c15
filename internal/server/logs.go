package server

import (
	"context"
	"fmt"
	"time"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/wire"
)

const (
	// followQueued is how many bytes a follow leaves in its session's send queue at most
	// before it sends more: lines beyond wait in the follower (bounded, the oldest
	// dropped), not in the queue, so that a slow client loses log lines instead of its
	// connection, and its other answers are not stuck behind megabytes of logs.
	followQueued = 256 << 10
	// followPoll is how often a follow checks whether its client has read enough.
	followPoll = 20 * time.Millisecond
)

// logs answers a logs request: the lines kept of the interface (all interfaces if none is
// named), and, with follow, the later ones as they come until the client abandons the
// request or disconnects. A read-only request, open to any client.
func (ss *session) logs(m *wire.ClientMsg) {
	if m.Iface != "" {
		tab := ss.s.tab.Load()
		if (tab.pools[m.Iface] == nil && !ss.s.logBook.has(m.Iface)) || !ss.sees(m.Iface) {
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeUnknownInterface,
				Msg: fmt.Sprintf("unknown interface %q; this daemon serves: %s", m.Iface, ss.visibleNames(tab))})
			return
		}
		if !ss.mayRead(m.Iface) {
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeForbidden,
				Msg: forbiddenMsg(m.Iface, ss.s.guard.describe(ss.peer), ss.peer) + " (its workers' logs are for the peers that may use it, and admins)"})
			return
		}
	}
	if !m.Follow {
		ss.send(&wire.ClientMsg{T: wire.TLogs, ID: m.ID, Lines: ss.filterLines(ss.s.logBook.backlog(m.Iface))})
		return
	}
	backlog, f := ss.s.logBook.follow(m.Iface)
	backlog = ss.filterLines(backlog)
	ctx, cancel := context.WithCancel(ss.ctx)
	id := m.ID
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		cancel()
		ss.s.logBook.unfollow(f)
		return
	}
	ss.waiting[id] = cancel // abandon {id} ends the follow, as it ends a waiting checkout
	ss.acquires.Add(1)
	ss.mu.Unlock()
	// The backlog, then one message per batch of new lines; at least one message, so
	// that the client knows the follow has begun.
	batches := splitLines(backlog)
	if len(batches) == 0 {
		batches = [][]wire.LogLine{nil}
	}
	for _, lines := range batches {
		ss.send(&wire.ClientMsg{T: wire.TLogs, ID: id, Lines: lines})
	}
	go func() {
		defer ss.acquires.Done()
		defer crash.OnPanic(ss.log, "session logs follow")
		defer func() {
			cancel()
			ss.s.logBook.unfollow(f)
			ss.mu.Lock()
			delete(ss.waiting, id)
			ss.mu.Unlock()
		}()
		ss.followLogs(ctx, id, f)
	}()
}

// followLogs sends f's lines as they come until ctx ends (abandon, or the session's
// end). It sends only while the client keeps its send queue short (followQueued): lines
// that come meanwhile wait in f, whose oldest are dropped once it is full; the next
// message says how many.
func (ss *session) followLogs(ctx context.Context, id uint64, f *follower) {
	var tick *time.Ticker
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	for {
		for ss.out.Unwritten() > followQueued {
			if tick == nil {
				tick = time.NewTicker(followPoll)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
		lines, dropped := ss.s.logBook.take(f)
		lines = ss.filterLines(lines) // the rules as they are now: a reload applies
		if len(lines) == 0 && dropped == 0 {
			select {
			case <-ctx.Done():
				return
			case <-f.wake:
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		ss.send(&wire.ClientMsg{T: wire.TLogs, ID: id, Lines: lines, Dropped: dropped})
	}
}
