package sendq

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/fdio"
)

// Descriptors on the stream: AppendRights queues a message with a descriptor that rides
// on its first byte (SCM_RIGHTS on a unix socket). The queue owns the descriptor from
// then on: it closes its copy once sent, or when the queue fails or is aborted. Writes
// that reach such a message are cut there, so that the descriptor goes with a sendmsg
// whose first byte is the message's first byte, and every byte before it went first.

// right is a descriptor to send with the byte at offset at of the stream.
type right struct {
	at uint64
	f  *os.File
}

// ErrNoRights is returned by AppendRights on a queue whose Conn has no descriptor.
var ErrNoRights = errors.New("sendq: this connection cannot carry descriptors")

// AppendRights is Append for a message that carries f (SCM_RIGHTS on its first byte). The
// queue takes f over and closes it once sent, or on failure; it closes it at once if the
// message is refused (closed queue: false, nil), or if the Conn cannot carry one.
func (q *Queue) AppendRights(fn func([]byte) []byte, f *os.File) (bool, error) {
	if q.raw == nil {
		f.Close()
		return false, ErrNoRights
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		f.Close()
		return false, nil
	}
	q.rights = append(q.rights, right{at: q.accepted, f: f})
	q.mu.Unlock()
	// The queue may not take it after all (closed meanwhile, or over its limit): then
	// failure closes f with the other rights (fail), unless it was never taken.
	ok := q.Append(fn)
	if !ok {
		q.mu.Lock()
		q.dropUnsentLocked()
		q.mu.Unlock()
	}
	return ok, nil
}

// rightsInLocked returns the rights to send with a write of n bytes from stream offset
// base (the queue's written offset). q.mu is held. No allocation when there are none.
func (q *Queue) rightsInLocked(base uint64, n int) []right {
	if len(q.rights) == 0 {
		return nil
	}
	var rs []right
	for _, r := range q.rights {
		if r.at >= base && r.at < base+uint64(n) {
			rs = append(rs, r)
		}
	}
	return rs
}

// sentRightsLocked closes and forgets the first k rights, which a write has sent. q.mu is
// held.
func (q *Queue) sentRightsLocked(k int) {
	for i := range k {
		q.rights[i].f.Close()
		q.rights[i] = right{}
	}
	q.rights = q.rights[k:]
	if len(q.rights) == 0 {
		q.rights = nil
	}
}

// dropUnsentLocked closes the rights whose bytes were never queued or written: all of
// them once the queue has failed (nothing more is sent), else those past what was
// accepted. q.mu is held.
func (q *Queue) dropUnsentLocked() {
	keep := q.rights[:0]
	for _, r := range q.rights {
		if q.failed || r.at >= q.accepted {
			r.f.Close()
			continue
		}
		keep = append(keep, r)
	}
	q.rights = keep
}

// writeRights writes buf, which starts at stream offset base, cutting it at each right of
// rs and sending that right with the bytes that follow it. With block it waits for the
// socket to take everything; else it stops at the first EAGAIN. It returns the bytes
// written and how many of rs went.
func (q *Queue) writeRights(buf []byte, base uint64, rs []right, block bool) (n, sent int, err error) {
	werr := q.raw.Write(func(fd uintptr) bool {
		for n < len(buf) {
			end, rfd := len(buf), -1
			if sent < len(rs) {
				if at := int(rs[sent].at - base); at > n {
					end = at
				} else {
					rfd = int(rs[sent].f.Fd())
					if sent+1 < len(rs) {
						end = int(rs[sent+1].at - base)
					}
				}
			}
			var m int
			var e error
			if rfd >= 0 {
				m, e = unix.SendmsgN(int(fd), buf[n:end], unix.UnixRights(rfd), nil, unix.MSG_NOSIGNAL)
			} else {
				m, e = fdio.Write(fd, buf[n:end])
			}
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				return !block
			case e != nil:
				err = e
				return true
			}
			if rfd >= 0 && m > 0 {
				sent++
			}
			n += m
		}
		return true
	})
	if err == nil {
		err = werr
	}
	return n, sent, err
}
