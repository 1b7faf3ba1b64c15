package worker

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
)

// StderrLimit bounds what one worker's stderr puts in taskd's log, so that a worker
// that floods its stderr cannot flood the log (or, under journald's rate limit, crowd
// out taskd's own messages). The zero value logs every line, long ones in pieces of
// 4 KiB. The stderr tail that error messages quote is not limited: it always holds the
// last lines, logged or not.
type StderrLimit struct {
	// LineMax is the longest line logged, in bytes: a longer one is cut there (at a
	// character boundary) and marked "… (truncated, N bytes)". <= 0: no limit; a long
	// line is logged in pieces of 4 KiB.
	LineMax int
	// Rate is how many lines a second are logged, on average (a token bucket); the
	// lines over it are counted, not logged, and one line a second at most says how
	// many were dropped. <= 0: no limit.
	Rate int
	// Burst is how many lines may be logged at once before Rate holds them back (the
	// bucket's size). <= 0: Rate.
	Burst int
}

const (
	// stderrChunk is the reader's buffer, and the size of the pieces a line is logged in
	// when LineMax is off.
	stderrChunk = 4 << 10
	// stderrSummaryEvery is how often, at most, the lines dropped over the rate limit
	// are summed up in one log line; the rest wait for the next, or for EOF.
	stderrSummaryEvery = time.Second
)

// readStderr is the stderr reader: it logs the lines of the worker's stderr within its
// StderrLimit and keeps the last few for error messages. It returns at EOF or when drain
// closes the pipe, after logging what it dropped.
//
// A line over the rate limit costs a copy of its first bytes into the tail and a count:
// no log entry, no string. A line over LineMax is kept up to LineMax; the rest is only
// counted.
func (p *process) readStderr() {
	defer close(p.errDone)
	defer crash.OnPanic(p.log, "worker stderr")
	r := stderrReader{p: p, tokens: math.Inf(1), last: time.Now()}
	br := bufio.NewReaderSize(&r.clock, stderrChunk)
	r.clock.f = p.stderr
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			r.write(chunk, err == nil)
		}
		deadline := errors.Is(err, os.ErrDeadlineExceeded) // the summary is due
		if err != nil && !deadline && !errors.Is(err, bufio.ErrBufferFull) {
			if r.in { // a last line without a newline
				r.endLine()
			}
			r.summary()
			return
		}
		if deadline || (!r.due.IsZero() && !r.clock.now.Before(r.due)) {
			r.summary()
		}
	}
}

// stderrReader is the state of the stderr reader goroutine (readStderr): the line being
// read, the token bucket, and what was dropped since the last summary.
type stderrReader struct {
	p *process

	lim    StderrLimit // the limit for the line being read, read at its start
	in     bool        // inside a line
	drop   bool        // the line being read is over the rate limit: counted only
	line   []byte      // what is kept of it (up to LineMax, or the piece being filled)
	n      int         // its length so far
	pieces bool        // some of it has been logged already, in pieces (LineMax off)

	tokens float64   // the bucket: lines that may be logged now (+Inf before the first)
	last   time.Time // when tokens was last filled up
	clock  clockReader

	dropLines, dropBytes int64     // dropped since the last summary
	due                  time.Time // when the summary is due; zero: nothing dropped
	deadline             bool      // a read deadline is set for due
}

// write takes the next chunk of stderr; end says it ended with a newline.
func (r *stderrReader) write(c []byte, end bool) {
	if end {
		c = trimNewline(c)
	}
	if !r.in {
		r.begin()
	}
	r.p.tail.write(c)
	r.n += len(c)
	if !r.drop {
		r.keep(c)
	}
	if end {
		r.endLine()
	}
}

// begin starts a line: it takes the current limit and a token, if there is one.
func (r *stderrReader) begin() {
	r.in, r.n, r.pieces, r.line = true, 0, false, r.line[:0]
	r.lim = *r.p.limit.Load()
	r.drop = !r.take()
}

// take takes a token from the bucket, filled up at Rate since the last time, and reports
// whether there was one.
func (r *stderrReader) take() bool {
	if r.lim.Rate <= 0 {
		return true
	}
	burst := float64(r.lim.Burst)
	if r.lim.Burst <= 0 {
		burst = float64(r.lim.Rate)
	}
	now := r.clock.now
	r.tokens = min(burst, r.tokens+now.Sub(r.last).Seconds()*float64(r.lim.Rate))
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

// keep keeps the chunk c of a line that is logged: up to LineMax, or, with LineMax off,
// in pieces of stderrChunk, each logged once full.
func (r *stderrReader) keep(c []byte) {
	if r.lim.LineMax > 0 {
		if room := r.lim.LineMax - len(r.line); room > 0 {
			r.line = append(r.line, c[:min(room, len(c))]...)
		}
		return
	}
	for len(c) > 0 {
		if len(r.line) == stderrChunk {
			msg := string(r.line)
			r.p.log.Info(msg, zap.String("stream", "stderr"), zap.Bool("split", true))
			r.passOn(msg)
			r.line, r.pieces = r.line[:0], true
		}
		k := min(stderrChunk-len(r.line), len(c))
		r.line = append(r.line, c[:k]...)
		c = c[k:]
	}
}

// endLine ends the line being read: it logs it, or counts it as dropped.
func (r *stderrReader) endLine() {
	r.in = false
	r.p.tail.end()
	if r.drop {
		r.dropLines++
		r.dropBytes += int64(r.n)
		if r.p.dropped != nil {
			r.p.dropped.Add(1)
		}
		if r.due.IsZero() {
			r.due = r.clock.now.Add(stderrSummaryEvery)
			// The deadline wakes the reader to log the summary when the worker falls
			// silent; without one (a file that cannot have one) it waits for the next
			// chunk or EOF.
			r.deadline = r.p.stderr.SetReadDeadline(r.due) == nil
		}
		return
	}
	fields := []zap.Field{zap.String("stream", "stderr")}
	if r.pieces {
		fields = append(fields, zap.Bool("split", true))
	}
	msg := string(r.line)
	if r.lim.LineMax > 0 && r.n > len(r.line) {
		msg = string(cutRune(r.line)) + fmt.Sprintf("… (truncated, %d bytes)", r.n)
	}
	r.p.log.Info(msg, fields...)
	r.passOn(msg)
}

// passOn gives a logged line to Config.StderrLine, if set.
func (r *stderrReader) passOn(msg string) {
	if r.p.onLine != nil {
		r.p.onLine(r.p.pid, r.clock.now, msg)
	}
}

// summary logs how many lines were dropped since the last summary, if any, and clears
// the read deadline.
func (r *stderrReader) summary() {
	if r.deadline {
		_ = r.p.stderr.SetReadDeadline(time.Time{})
		r.deadline = false
	}
	r.due = time.Time{}
	if r.dropLines == 0 {
		return
	}
	r.p.log.Warn(fmt.Sprintf("worker stderr: dropped %d lines (%d bytes) over the rate limit (stderr_rate)", r.dropLines, r.dropBytes),
		zap.Int64("dropped_lines", r.dropLines), zap.Int64("dropped_bytes", r.dropBytes))
	r.dropLines, r.dropBytes = 0, 0
}

// clockReader reads stderr and notes the time of each read, the clock of the token bucket
// and of the summary: the lines of one read (up to 4 KiB) share it, so that a flood of
// short lines costs one clock reading per read, not one per line.
type clockReader struct {
	f   *os.File
	now time.Time
}

func (c *clockReader) Read(b []byte) (int, error) {
	n, err := c.f.Read(b)
	c.now = time.Now()
	return n, err
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// cutRune drops an incomplete UTF-8 sequence from the end of b, left by cutting it.
func cutRune(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}

// stderrTail keeps the first bytes of the last few stderr lines, for error messages,
// whether they were logged or not. The stderr reader writes each line's chunks and ends
// it; exit reads the lines. It does not allocate once its slots have grown.
type stderrTail struct {
	cur  []byte // the first tailLineMax bytes of the line being read (the reader's own)
	long bool   // the line being read is longer than that

	mu   sync.Mutex
	ring [tailLines][]byte // the last lines, ring[next] the oldest once full
	next int
	n    int
}

const (
	tailLines   = 8
	tailLineMax = 300
)

// write adds a chunk of the line being read.
func (t *stderrTail) write(c []byte) {
	room := tailLineMax - len(t.cur)
	if len(c) > room {
		t.long = true
		c = c[:room]
	}
	t.cur = append(t.cur, c...)
}

// end ends the line being read and keeps it.
func (t *stderrTail) end() {
	t.mu.Lock()
	slot := t.ring[t.next][:0]
	if t.long {
		slot = append(append(slot, cutRune(t.cur)...), "…"...)
	} else {
		slot = append(slot, t.cur...)
	}
	t.ring[t.next] = slot
	t.next = (t.next + 1) % tailLines
	t.n = min(t.n+1, tailLines)
	t.mu.Unlock()
	t.cur, t.long = t.cur[:0], false
}

// lines returns the last lines kept, oldest first.
func (t *stderrTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		return nil
	}
	out := make([]string, 0, t.n)
	for i := range t.n {
		out = append(out, string(t.ring[(t.next-t.n+i+tailLines)%tailLines]))
	}
	return out
}
