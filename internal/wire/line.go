package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxMessageBytes is the longest line accepted when no limit is configured (16 MiB).
const DefaultMaxMessageBytes = 16 << 20

// MaxMessageBytes is the largest max_message_bytes taskd accepts (1 GiB): one line is held
// in memory whole, so a larger limit is a way to run out of memory, not a feature.
const MaxMessageBytes = 1 << 30

// snippetLen is how much of an offending line an error quotes.
const snippetLen = 80

// ErrLineTooLong reports a line longer than the reader's limit. The reader stays usable:
// the rest of the long line has been discarded up to and including its newline.
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
// bufio.Scanner it never fails silently on a long line.
//
// A LineReader is not safe for concurrent use; its owner is the one goroutine that reads.
type LineReader struct {
	br     *bufio.Reader
	max    int
	buf    []byte
	strict bool // a final unterminated line is io.ErrUnexpectedEOF, not a line
}

// Strict makes a final unterminated line an error (io.ErrUnexpectedEOF) instead of a line:
// for a peer whose messages must not be acted on unless they arrived whole (a client's
// request cut by a broken connection). It returns r.
func (r *LineReader) Strict() *LineReader {
	r.strict = true
	return r
}

// NewLineReader returns a reader of lines up to max bytes (max <= 0 means
// DefaultMaxMessageBytes).
func NewLineReader(r io.Reader, max int) *LineReader {
	if max <= 0 {
		max = DefaultMaxMessageBytes
	}
	return &LineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// ReadLine returns the next line without its trailing "\n" (and "\r\n" is kept as is apart
// from the "\n"). At end of input it returns io.EOF; a final unterminated line is returned
// first (unless Strict). A line longer than the limit yields a *LineTooLongError after the whole line has
// been consumed, so the caller may continue reading.
func (r *LineReader) ReadLine() ([]byte, error) {
	if cap(r.buf) > 1<<20 {
		r.buf = nil // do not keep a long line's buffer for the reader's lifetime
	}
	r.buf = r.buf[:0]
	for {
		frag, err := r.br.ReadSlice('\n')
		if err == nil && len(r.buf) == 0 && len(frag)-1 <= r.max {
			// The whole line is in the read buffer (the usual case): no copy.
			return frag[:len(frag)-1], nil
		}
		n := len(r.buf) + len(frag)
		if err == nil {
			n-- // the newline does not count
		}
		if n > r.max {
			snip := Snippet(append(r.buf, frag...))
			r.buf = r.buf[:0]
			if errors.Is(err, bufio.ErrBufferFull) {
				if derr := r.discardLine(); derr != nil {
					return nil, derr
				}
			}
			return nil, &LineTooLongError{Limit: r.max, Snippet: snip}
		}
		r.buf = append(r.buf, frag...)
		switch {
		case err == nil:
			return r.buf[:len(r.buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(r.buf) > 0:
			if r.strict {
				return nil, io.ErrUnexpectedEOF
			}
			return r.buf, nil
		default:
			return nil, err
		}
	}
}

// discardLine drops input up to and including the next newline. Reaching end of input
// while discarding is not an error here: the next ReadLine reports it.
func (r *LineReader) discardLine() error {
	for {
		_, err := r.br.ReadSlice('\n')
		switch {
		case err == nil, errors.Is(err, io.EOF):
			return nil
		case !errors.Is(err, bufio.ErrBufferFull):
			return err
		}
	}
}

// Snippet quotes the first bytes of a line for an error message, so that a protocol error
// shows what was received without copying a megabyte into a log.
func Snippet(line []byte) string {
	if len(line) <= snippetLen {
		return fmt.Sprintf("%q", line)
	}
	return fmt.Sprintf("%q…", line[:snippetLen])
}
