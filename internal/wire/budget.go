package wire

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Budget is an amount of memory, in bytes, that LineReaders share (see
// LineReader.WithBudget): the buffer of a line longer than ReadBufferSize takes its
// capacity from the budget while the line is read and handled, and gives it back at the
// reader's next ReadLine (or Release). A line that would take the budget past its limit is
// refused with a *LineMemoryError; nothing waits for memory, so readers cannot deadlock on
// each other. A nil *Budget is unlimited.
//
// A Budget is safe for concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Limit returns the budget's size in bytes (0 for a nil budget: unlimited).
func (b *Budget) Limit() int64 {
	if b == nil {
		return 0
	}
	return b.limit
}

// InUse returns the bytes taken from the budget now.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// take takes n bytes if the budget has them.
func (b *Budget) take(n int) bool {
	if b == nil {
		return true
	}
	for {
		u := b.used.Load()
		if u+int64(n) > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+int64(n)) {
			return true
		}
	}
}

// give gives back n bytes that take took.
func (b *Budget) give(n int) {
	if b != nil {
		b.used.Add(-int64(n))
	}
}

// ErrLineMemory reports a line that could not be read because its reader's Budget was
// used up by other readers' long lines.
var ErrLineMemory = errors.New("wire: no memory left for a long line")

// LineMemoryError is returned (and matches ErrLineMemory) when a line longer than
// ReadBufferSize needs more memory than its reader's Budget has left. Like a line too
// long, it stops the reader.
type LineMemoryError struct {
	Budget int64 // the budget's size in bytes
}

func (e *LineMemoryError) Error() string {
	return fmt.Sprintf("wire: no memory left for a line longer than %d bytes: the %d bytes shared by all connections' long lines (max_line_memory) are in use", ReadBufferSize, e.Budget)
}

// Is makes errors.Is(err, ErrLineMemory) true.
func (e *LineMemoryError) Is(target error) bool { return target == ErrLineMemory }
