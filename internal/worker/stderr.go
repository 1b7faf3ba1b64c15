package worker

import (
	"bufio"
	"errors"
	"sync"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
)

// stderrChunk bounds one log entry made from stderr: longer lines are split.
const stderrChunk = 4 << 10

// readStderr is the stderr reader: it logs every line of the worker's stderr (split into
// entries of at most stderrChunk bytes) and keeps the last few for error messages. It
// returns at EOF or when drain closes the pipe.
func (p *process) readStderr() {
	defer close(p.errDone)
	defer crash.OnPanic(p.log, "worker stderr")
	br := bufio.NewReaderSize(p.stderr, stderrChunk)
	partial := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			full := err == nil
			text := string(trimNewline(chunk))
			if full || len(text) > 0 {
				fields := []zap.Field{zap.String("stream", "stderr")}
				if partial || !full {
					fields = append(fields, zap.Bool("split", true))
				}
				p.log.Info(text, fields...)
				p.tail.add(text)
			}
			partial = !full
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
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

// stderrTail keeps the last few stderr lines for error messages. It is safe for
// concurrent use: the stderr reader adds, exit reads.
type stderrTail struct {
	mu  sync.Mutex
	buf []string
}

const (
	tailLines   = 8
	tailLineMax = 300
)

func (t *stderrTail) add(line string) {
	if len(line) > tailLineMax {
		line = line[:tailLineMax] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == tailLines {
		copy(t.buf, t.buf[1:])
		t.buf = t.buf[:tailLines-1]
	}
	t.buf = append(t.buf, line)
}

func (t *stderrTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
