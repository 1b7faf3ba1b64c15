package taskdtest

import (
	"bytes"
	"strings"
	"sync"
)

// logLines is how many lines of the daemon's log a Server keeps, and failureLines how
// many of the last ones a failed test logs.
const (
	logLines     = 2000
	failureLines = 100
)

// logBuffer keeps the last logLines lines written to it (the daemon's zap log). It is
// safe for concurrent use.
type logBuffer struct {
	mu      sync.Mutex
	lines   []string // the kept lines, oldest first; at most logLines
	dropped int      // lines dropped from the front
	partial []byte   // a line not yet ended by '\n'
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	rest := p
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			b.partial = append(b.partial, rest...)
			return len(p), nil
		}
		b.lines = append(b.lines, string(b.partial)+string(rest[:i]))
		b.partial = b.partial[:0]
		rest = rest[i+1:]
		if len(b.lines) > logLines {
			n := len(b.lines) - logLines
			b.lines = append(b.lines[:0], b.lines[n:]...)
			b.dropped += n
		}
	}
}

// Sync is for zapcore.WriteSyncer; there is nothing to flush.
func (b *logBuffer) Sync() error { return nil }

// tail returns the last n kept lines (all of them if n <= 0), one per line, and how many
// lines before them are not included.
func (b *logBuffer) tail(n int) (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := b.lines
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	if len(lines) == 0 {
		return "", b.dropped
	}
	return strings.Join(lines, "\n") + "\n", b.dropped + len(b.lines) - len(lines)
}
