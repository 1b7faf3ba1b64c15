package server

import (
	"slices"
	"sync"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// The bounds of the stderr lines kept, per interface and per follower.
const (
	// logRingLines and logRingBytes bound an interface's ring: the last 1000 lines or the
	// last 256 KiB of them, whichever is less.
	logRingLines = 1000
	logRingBytes = 256 << 10
	// followLines bounds the lines waiting for one follower: a client that reads too
	// slowly loses the oldest, and is told how many.
	followLines = 1000
	// logBatchBytes bounds the line bytes of one logs message of a follow.
	logBatchBytes = 256 << 10
	// logAnswerBytes bounds the line bytes of a backlog (all interfaces together): the
	// newest are kept. It keeps an answer well below a client's longest line.
	logAnswerBytes = 1 << 20
)

// logBook keeps the recent stderr lines of each interface's workers, as they were logged
// (after stderr_line_max and stderr_rate), in a ring per interface name, kept across
// reloads, and passes new lines on to the followers of logs requests. Workers' stderr
// readers add lines; sessions read the backlog and follow.
//
// One mutex guards it all; nothing slow happens under it: a line is put in a ring and in
// each follower's own bounded buffer, and a follower is woken without blocking. A stderr
// reader is never held up by a follower, however slow its client.
type logBook struct {
	mu        sync.Mutex
	rings     map[string]*logRing
	followers map[*follower]struct{}
}

// logRing is one interface's recent lines, oldest first.
type logRing struct {
	lines []wire.LogLine
	bytes int // of the lines' text
}

// follower is one logs request that follows: the lines it has not sent yet.
type follower struct {
	iface   string        // "" follows every interface
	wake    chan struct{} // 1-buffered: a line is waiting
	lines   []wire.LogLine
	dropped uint64 // lines dropped (the oldest) since the last take: the client was slow
}

func newLogBook() *logBook {
	return &logBook{rings: make(map[string]*logRing), followers: make(map[*follower]struct{})}
}

// add keeps a line of a worker of iface and passes it on to the followers. It is called
// on the worker's stderr reader goroutine (worker.Config.StderrLine) and never blocks.
func (b *logBook) add(iface, worker string, pid int, at time.Time, line string) {
	l := wire.LogLine{TS: float64(at.UnixMicro()) / 1e6, Iface: iface, Worker: worker, PID: pid, Line: line}
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.rings[iface]
	if r == nil {
		r = &logRing{}
		b.rings[iface] = r
	}
	r.lines = append(r.lines, l)
	r.bytes += len(line)
	for len(r.lines) > logRingLines || (r.bytes > logRingBytes && len(r.lines) > 1) {
		r.bytes -= len(r.lines[0].Line)
		r.lines[0] = wire.LogLine{}
		r.lines = r.lines[1:]
	}
	for f := range b.followers {
		if f.iface != "" && f.iface != iface {
			continue
		}
		if len(f.lines) >= followLines {
			f.lines[0] = wire.LogLine{}
			f.lines = f.lines[1:]
			f.dropped++
		}
		f.lines = append(f.lines, l)
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// has reports whether lines of iface were ever kept.
func (b *logBook) has(iface string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rings[iface] != nil
}

// backlog returns a copy of the lines kept of iface ("" for all interfaces, merged in
// time order), at most logAnswerBytes of them, the newest.
func (b *logBook) backlog(iface string) []wire.LogLine {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.backlogLocked(iface)
}

func (b *logBook) backlogLocked(iface string) []wire.LogLine {
	var out []wire.LogLine
	if iface != "" {
		if r := b.rings[iface]; r != nil {
			out = slices.Clone(r.lines)
		}
	} else {
		for _, r := range b.rings {
			out = append(out, r.lines...)
		}
		slices.SortStableFunc(out, func(x, y wire.LogLine) int {
			switch {
			case x.TS < y.TS:
				return -1
			case x.TS > y.TS:
				return 1
			}
			return 0
		})
	}
	n := 0
	for i := len(out) - 1; i >= 0; i-- {
		if n += len(out[i].Line); n > logAnswerBytes {
			return out[i+1:]
		}
	}
	return out
}

// follow registers a follower of iface ("" for all) and returns it with the backlog,
// taken at the same moment: no line is missed or sent twice between the two.
func (b *logBook) follow(iface string) ([]wire.LogLine, *follower) {
	f := &follower{iface: iface, wake: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.followers[f] = struct{}{}
	return b.backlogLocked(iface), f
}

// unfollow ends f: no more lines are given to it.
func (b *logBook) unfollow(f *follower) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.followers, f)
}

// take takes the lines waiting for f, at most logBatchBytes of them (the oldest), and
// how many were dropped before them.
func (b *logBook) take(f *follower) ([]wire.LogLine, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, size := 0, 0
	for n < len(f.lines) && (n == 0 || size+len(f.lines[n].Line) <= logBatchBytes) {
		size += len(f.lines[n].Line)
		n++
	}
	lines := slices.Clone(f.lines[:n])
	clear(f.lines[:n])
	f.lines = f.lines[n:]
	if len(f.lines) == 0 {
		f.lines = nil // let the backing array go
	}
	dropped := f.dropped
	f.dropped = 0
	return lines, dropped
}

// splitLines cuts lines into batches of at most logBatchBytes of text (at least one line
// each), for the messages of a follow's backlog.
func splitLines(lines []wire.LogLine) [][]wire.LogLine {
	var out [][]wire.LogLine
	for len(lines) > 0 {
		n, size := 0, 0
		for n < len(lines) && (n == 0 || size+len(lines[n].Line) <= logBatchBytes) {
			size += len(lines[n].Line)
			n++
		}
		out = append(out, lines[:n])
		lines = lines[n:]
	}
	return out
}
