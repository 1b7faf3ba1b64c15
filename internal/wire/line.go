package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxMessageBytes is the longest line accepted when no limit is configured (16 MiB).
const DefaultMaxMessageBytes = 16 << 20

// MaxMessageBytes is the largest max_message_bytes taskd accepts (1 GiB): one line is held
// in memory whole, so a larger limit is a way to run out of memory, not a feature.
const MaxMessageBytes = 1 << 30

// ReadBufferSize is the size of a LineReader's read buffer. A line that fits in it is
// returned from it, without a copy and without taking memory from a Budget; a longer line
// is gathered in a buffer of its own.
const ReadBufferSize = 64 << 10

// snippetLen is how much of an offending line an error quotes.
const snippetLen = 80

// ErrLineTooLong reports a line longer than the reader's limit. It is reported as soon as
// the limit is passed, without reading the rest of the line, so the reader cannot go on:
// every later ReadLine returns the same error.
var ErrLineTooLong = errors.New("wire: line too long")

// LineTooLongError is returned (and matches ErrLineTooLong) when a line exceeds the limit.
type LineTooLongError struct {
	Limit   int
	Snippet string // the first bytes of the line, quoted
}

func (e *LineTooLongError) Error() string {
	return fmt.Sprintf("wire: line longer than %d bytes (max_message_bytes) starting %s", e.Limit, e.Snippet)
}

// Is makes errors.Is(err, ErrLineTooLong) true.
func (e *LineTooLongError) Is(target error) bool { return target == ErrLineTooLong }

// LineReader reads newline-terminated lines of at most max bytes (not counting the newline)
// and reuses its buffers: a returned line is valid only until the next call. Unlike
// bufio.Scanner it never fails silently on a long line, and unlike bufio.Reader it refuses
// a line as soon as it passes the limit, not once a buffer is full.
//
// Its memory is its read buffer (ReadBufferSize) and, while a line longer than that is
// read and until the next ReadLine (or Release), a buffer for that line of at most max
// bytes, taken from its Budget if it has one.
//
// A LineReader is not safe for concurrent use; its owner is the one goroutine that reads.
type LineReader struct {
	rd     io.Reader
	rbuf   []byte // read buffer: rbuf[r:w] has been read and not yet returned
	r, w   int
	rerr   error // rd's error, reported once the bytes before it are used up
	max    int
	long   []byte  // a line that outgrew rbuf; its capacity is taken from budget
	budget *Budget // nil: no budget
	strict bool    // a final unterminated line is io.ErrUnexpectedEOF, not a line
	err    error   // sticky: a line too long, or no memory for it
}

// NewLineReader returns a reader of lines up to max bytes (max <= 0 means
// DefaultMaxMessageBytes).
func NewLineReader(r io.Reader, max int) *LineReader {
	if max <= 0 {
		max = DefaultMaxMessageBytes
	}
	return &LineReader{rd: r, rbuf: make([]byte, ReadBufferSize), max: max}
}

// Strict makes a final unterminated line an error (io.ErrUnexpectedEOF) instead of a line:
// for a peer whose messages must not be acted on unless they arrived whole (a client's
// request cut by a broken connection). It returns r.
func (r *LineReader) Strict() *LineReader {
	r.strict = true
	return r
}

// WithBudget makes the buffers of lines longer than ReadBufferSize take their memory from
// b (shared with other readers), and returns r. A line that needs more than b has left
// fails with a *LineMemoryError. The owner must call Release when it stops reading.
func (r *LineReader) WithBudget(b *Budget) *LineReader {
	r.budget = b
	return r
}

// Release gives back the buffer of the last line returned, if it had one of its own (the
// line is then no longer valid). ReadLine calls it first thing; call it when done reading.
func (r *LineReader) Release() {
	if r.long != nil {
		r.budget.give(cap(r.long))
		r.long = nil
	}
}

// ReadLine returns the next line without its trailing "\n" (and "\r\n" is kept as is apart
// from the "\n"). At end of input it returns io.EOF; a final unterminated line is returned
// first (unless Strict). A line longer than the limit yields a *LineTooLongError as soon
// as the bytes read pass the limit (at most ReadBufferSize later); a line that needs more
// memory than the budget has left yields a *LineMemoryError. Either stops the reader: the
// rest of the line is not read, and every later call returns the same error.
func (r *LineReader) ReadLine() ([]byte, error) {
	r.Release() // a long line's buffer is not kept for the next
	if r.err != nil {
		return nil, r.err
	}
	scanned := 0 // rbuf[r.r:r.r+scanned] has no newline
	for {
		if i := bytes.IndexByte(r.rbuf[r.r+scanned:r.w], '\n'); i >= 0 {
			end := r.r + scanned + i
			if len(r.long)+end-r.r > r.max {
				return nil, r.tooLong()
			}
			line := r.rbuf[r.r:end]
			r.r = end + 1
			if r.long == nil {
				return line, nil // the usual case: no copy
			}
			if err := r.grow(len(line)); err != nil {
				return nil, err
			}
			r.long = append(r.long, line...)
			return r.long, nil
		}
		scanned = r.w - r.r
		if len(r.long)+scanned > r.max {
			return nil, r.tooLong()
		}
		if r.rerr != nil {
			return r.endOfInput()
		}
		if r.w == len(r.rbuf) { // full: make room
			if r.r > 0 {
				r.w = copy(r.rbuf, r.rbuf[r.r:r.w])
				r.r = 0
			} else { // one line fills it: gather it in long
				if err := r.grow(r.w); err != nil {
					return nil, err
				}
				r.long = append(r.long, r.rbuf[:r.w]...)
				r.w, scanned = 0, 0
			}
		}
		r.fill()
	}
}

// fill reads once into the free end of rbuf (retrying reads that return nothing).
func (r *LineReader) fill() {
	for range 100 {
		n, err := r.rd.Read(r.rbuf[r.w:])
		r.w += n
		if err != nil {
			r.rerr = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.rerr = io.ErrNoProgress
}

// endOfInput handles the read error once no newline is left: a final unterminated line,
// or the error itself.
func (r *LineReader) endOfInput() ([]byte, error) {
	line := r.rbuf[r.r:r.w]
	r.r = r.w
	switch {
	case len(line) == 0 && r.long == nil:
		return nil, r.rerr
	case !errors.Is(r.rerr, io.EOF):
		r.Release()
		return nil, r.rerr
	case r.strict:
		r.Release()
		return nil, io.ErrUnexpectedEOF
	case r.long == nil:
		return line, nil
	}
	if err := r.grow(len(line)); err != nil {
		return nil, err
	}
	r.long = append(r.long, line...)
	return r.long, nil
}

// grow makes room in long for n more bytes, taking the memory from the budget: twice
// the current capacity if the budget has it (at most max), else just enough.
func (r *LineReader) grow(n int) error {
	need := len(r.long) + n
	if need <= cap(r.long) {
		return nil
	}
	c := min(max(2*cap(r.long), need), r.max)
	if !r.budget.take(c - cap(r.long)) {
		c = need
		if !r.budget.take(c - cap(r.long)) {
			return r.stop(&LineMemoryError{Budget: r.budget.Limit()})
		}
	}
	nl := make([]byte, len(r.long), c)
	copy(nl, r.long)
	r.long = nl // the budget now holds c for it: the old capacity plus what was taken
	return nil
}

// tooLong stops the reader with a *LineTooLongError quoting the start of the line.
func (r *LineReader) tooLong() error {
	start := r.long
	if start == nil {
		start = r.rbuf[r.r:r.w]
	}
	snip := Snippet(start[:min(len(start), snippetLen+1)])
	return r.stop(&LineTooLongError{Limit: r.max, Snippet: snip})
}

// stop makes err sticky and lets go of the buffers.
func (r *LineReader) stop(err error) error {
	r.err = err
	r.Release()
	r.rbuf, r.r, r.w = nil, 0, 0
	return err
}

// Snippet quotes the first bytes of a line for an error message, so that a protocol error
// shows what was received without copying a megabyte into a log.
func Snippet(line []byte) string {
	if len(line) <= snippetLen {
		return fmt.Sprintf("%q", line)
	}
	return fmt.Sprintf("%q…", line[:snippetLen])
}
