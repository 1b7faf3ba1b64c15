package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/taskd-dev/taskd/internal/fdio"
	"github.com/taskd-dev/taskd/internal/lease"
	"github.com/taskd-dev/taskd/internal/sendq"
	"github.com/taskd-dev/taskd/internal/wire"
)

// DirectMode says whether a Client's checkouts may be direct leases (Config.Direct).
type DirectMode int

const (
	// DirectAuto (the zero value) asks taskd for a direct lease on every held checkout made
	// over a unix socket: if the worker supports leases (and its interface allows them),
	// the Checkout talks to the worker over a private socketpair, and taskd is off the
	// path of its calls; otherwise the checkout is relayed by taskd. Both behave alike.
	DirectAuto DirectMode = iota
	// DirectOff never asks for a direct lease: every call goes through taskd.
	DirectOff
)

// Direct leases (docs/worker-protocol.md, "Direct leases"). A held checkout that taskd
// grants directly comes with the client's end of a socketpair to the worker (it rides on
// the grant line: the connection's reader receives descriptors with every read, see
// lease.FDReader). The Checkout then speaks worker protocol v1 on it: calls with ep out,
// ok/err/aborted in, in order, read by the callers waiting for them (awaitPair). Everything
// else stays with taskd: release (taskd ends the lease and runs the done hook),
// abort and giving up on a call (taskd cancels the call on the worker's control channel),
// and the news that the worker was lost (lost, with taskd's reason).

// lostWait bounds how long a direct checkout whose pair reached EOF waits for taskd's lost
// message (which says why the worker went: call_timeout, killed...) before it fails with a
// plain ErrWorkerLost.
const lostWait = 500 * time.Millisecond

// pair is a direct checkout's end of its socketpair. There is no reader goroutine: a
// caller waiting for its answer (Pending.Wait) takes tok and reads the pair itself,
// handing the answers of other calls to their Pendings, until its own has come; the others
// wait for theirs or for tok. So a call costs the caller one wake-up, as on a pipe. The
// fields are set at creation; out has its own lock; in and eof are tok's.
type pair struct {
	nc  net.Conn
	out *sendq.Queue  // calls to the worker; never blocks
	tok chan struct{} // cap 1: full while a caller reads
	in  lineBuf
	eof bool // the pair reached EOF: the worker closed its end
}

// wantDirect reports whether checkout requests on cn ask for a direct lease.
func (c *Client) wantDirect(cn *conn) bool {
	return c.cfg.Direct == DirectAuto && cn.fds != nil
}

// setupFDs gives a new connection on a unix socket the reader that receives descriptors
// (cn.fds, kept for the grants that carry one), unless direct leases are off.
func (c *Client) setupFDs(cn *conn) {
	if uc, ok := cn.nc.(*net.UnixConn); ok && c.cfg.Direct == DirectAuto {
		if fr, err := lease.NewFDReader(uc); err == nil {
			cn.fds = fr
		}
	}
}

// reader returns what the connection's reader reads: cn.fds if it receives descriptors.
func (cn *conn) reader() io.Reader {
	if cn.fds != nil {
		return cn.fds
	}
	return fdio.NewReader(cn.nc)
}

// closeFDs closes the descriptors received and never taken (the reader, at its end).
func (cn *conn) closeFDs() {
	if cn.fds != nil {
		cn.fds.Close()
	}
}

// leaseFD is the descriptor that came with a direct grant, or why none did.
type leaseFD struct {
	f   *os.File
	err error
}

// leaseFD takes the descriptor of grant m if it is direct (nil otherwise). It runs on the
// reader goroutine (cn.fds is its own).
func (cn *conn) leaseFD(m *wire.ClientMsg) *leaseFD {
	if !m.Direct {
		return nil
	}
	if cn.fds == nil {
		return &leaseFD{err: errors.New("a direct grant on a connection that cannot carry descriptors")}
	}
	f, err := cn.fds.TakeFD()
	return &leaseFD{f: f, err: err}
}

// close closes the descriptor of a grant nobody takes.
func (l *leaseFD) close() {
	if l != nil && l.f != nil {
		l.f.Close()
	}
}

// pairLocked makes l co's pair if the grant was direct. If its descriptor did not come (or
// is unusable) it releases the checkout, fails req and returns false. c.mu is held.
func (c *Client) pairLocked(cn *conn, req *coReq, co *Checkout, l *leaseFD) bool {
	if l == nil {
		return true
	}
	err := l.err
	if err == nil {
		err = c.startPairLocked(co, l.f)
	}
	if err == nil {
		return true
	}
	c.sendLocked(cn, &wire.ClientMsg{T: wire.TRelease, Co: co.id, Retire: true})
	failReqLocked(req, &wrapped{
		text: fmt.Sprintf("%v: taskd granted checkout %d as a direct lease, but its socketpair did not arrive (%v); the checkout was released: check out again, or set Config.Direct to DirectOff", ErrProtocol, co.id, err),
		errs: []error{ErrProtocol}})
	c.freeSlotLocked()
	return false
}

// startPairLocked makes f, the client's end of a direct lease, co's pair. c.mu is held.
func (c *Client) startPairLocked(co *Checkout, f *os.File) error {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return fmt.Errorf("direct lease: %w", err)
	}
	co.pair = &pair{nc: nc, out: sendq.New(nc, nil), tok: make(chan struct{}, 1)}
	co.pair.in.rd = fdio.NewReader(nc)
	return nil
}

// closeLocked closes the pair: a caller reading it returns. co.mu is held.
func (p *pair) closeLocked() { p.out.Abort() }

// awaitPair is Pending.await for a direct checkout: it waits for p's answer, reading the
// pair itself whenever no other caller is.
func (p *Pending) awaitPair(ctx context.Context, pr *pair, timeout <-chan time.Time, deadline time.Time) error {
	co := p.co
	for {
		select {
		case <-p.done:
			return nil
		case <-co.gone:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return context.DeadlineExceeded
		case pr.tok <- struct{}{}:
		}
		eof := co.c.readPair(ctx, co, pr, p, deadline)
		<-pr.tok
		if eof {
			co.c.pairEOF(co)
		}
	}
}

// readPair reads answers from the pair and hands them out until p's has come, the read
// fails (ctx or the deadline ended it, or the pair was closed), or the pair reached EOF
// (it returns true then). The caller holds pr.tok.
func (c *Client) readPair(ctx context.Context, co *Checkout, pr *pair, p *Pending, deadline time.Time) (eof bool) {
	if pr.eof {
		return true
	}
	_ = pr.nc.SetReadDeadline(deadline)
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = pr.nc.SetReadDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	for !p.answered() {
		line, err := pr.in.readLine()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			pr.eof = true
			return true
		}
		if err != nil {
			return false // the deadline or ctx (the caller's select sees it), or closed
		}
		m, err := wire.DecodeWorkerMsg(line)
		if errors.Is(err, wire.ErrNotObject) {
			continue // not a protocol message; a worker's stdout rules do not apply here
		}
		if err == nil {
			err = c.pairReply(co, &m)
		}
		if err != nil {
			err = &wrapped{text: fmt.Sprintf("%v: the worker of %s broke the protocol on its direct lease: %v; release this checkout and check out again", ErrProtocol, co.describe(), err),
				errs: []error{ErrProtocol, ErrWorkerLost, err}}
			co.mu.Lock()
			co.fatalLocked(err, true) // taskd kills it (abort)
			co.mu.Unlock()
			return false
		}
	}
	return false
}

// pairEOF handles the end of a live checkout's pair: the worker ended the lease or died.
// It waits up to lostWait for taskd's lost message, which says why, and fails the
// checkout with ErrWorkerLost if none comes.
func (c *Client) pairEOF(co *Checkout) {
	t := time.NewTimer(lostWait)
	defer t.Stop()
	select {
	case <-co.gone: // taskd's lost message, or the application ended it
		return
	case <-t.C:
	case <-c.ctx.Done():
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	co.fatalLocked(&wrapped{
		text: fmt.Sprintf("%v: the worker of %s closed its direct lease (it exited or was killed); release this checkout and check out again", ErrWorkerLost, co.describe()),
		errs: []error{ErrWorkerLost},
	}, false)
}

// drainPair reads the answers already waiting on the pair (without waiting for more), so
// that Release knows which calls are still unanswered. It does nothing if a caller is
// reading.
func (c *Client) drainPair(co *Checkout, pr *pair) {
	select {
	case pr.tok <- struct{}{}:
	default:
		return
	}
	defer func() { <-pr.tok }()
	if pr.eof {
		return
	}
	_ = pr.nc.SetReadDeadline(time.Unix(1, 0)) // only what is there already
	for {
		line, err := pr.in.readLine()
		if err != nil {
			return
		}
		if m, err := wire.DecodeWorkerMsg(line); err == nil {
			_ = c.pairReply(co, &m)
		}
	}
}

// lineBuf reads lines from a pair. Unlike wire.LineReader, an error (a read deadline)
// loses nothing: the next readLine goes on where it stopped. Lines longer than maxLine
// are an error. tok's holder uses it.
type lineBuf struct {
	rd   io.Reader
	buf  []byte
	r, w int
}

func (b *lineBuf) readLine() ([]byte, error) {
	scanned := 0
	for {
		if i := bytes.IndexByte(b.buf[b.r+scanned:b.w], '\n'); i >= 0 {
			line := b.buf[b.r : b.r+scanned+i]
			b.r += scanned + i + 1
			return line, nil
		}
		scanned = b.w - b.r
		if b.r > 0 && b.w == len(b.buf) {
			b.w = copy(b.buf, b.buf[b.r:b.w])
			b.r = 0
		}
		if b.w == len(b.buf) {
			if len(b.buf) >= maxLine {
				return nil, fmt.Errorf("a line longer than %d bytes", maxLine)
			}
			nb := make([]byte, max(2*len(b.buf), 4096))
			b.w = copy(nb, b.buf[b.r:b.w])
			b.r, b.buf = 0, nb
		}
		n, err := b.rd.Read(b.buf[b.w:])
		b.w += n
		if err != nil && n == 0 {
			return nil, err
		}
	}
}

// pairReply hands reply m (ok, err or aborted) to its call. It runs on the pair's reader.
func (c *Client) pairReply(co *Checkout, m *wire.WorkerMsg) error {
	switch m.T {
	case wire.TOK, wire.TErr, wire.TAborted:
	case wire.TBye:
		return nil // taskd learns it on the worker's own channels
	default:
		return nil // unknown types are ignored
	}
	co.mu.Lock()
	p := co.calls[m.ID]
	if p == nil {
		// Known: a call whose checkout failed or was released meanwhile.
		known := (m.ID != 0 && m.ID <= co.nextCall) || co.stateErrLocked() != nil
		co.mu.Unlock()
		if known {
			return nil
		}
		return fmt.Errorf("reply for id %d, which is not an outstanding call", m.ID)
	}
	delete(co.calls, m.ID)
	var r json.RawMessage
	var rp *[]byte
	if m.T == wire.TOK {
		r, rp = copyResult(m.R) // m aliases the reader's buffer; Wait may come later
	}
	if m.T == wire.TOK && len(m.Logs) == 0 {
		p.answerLocked(r, rp, nil)
		co.mu.Unlock()
		return nil
	}
	co.mu.Unlock()
	if len(m.Logs) > 0 {
		c.emitLogs(co.info, p.method, m.Logs)
	}
	var err error
	switch m.T {
	case wire.TErr:
		err = c.answerErr(&wire.ClientMsg{T: wire.TErr, E: m.E}, p.method)
	case wire.TAborted:
		// As taskd words it for a relayed checkout (checkout.abortCall).
		err = daemonError("call "+callName(c.cfg.Interface, p.method), wire.CodeAborted,
			fmt.Sprintf("call %q not run: an earlier call on this checkout raised an error before this one was made; calls made after seeing that error run normally", p.method))
	}
	co.mu.Lock()
	p.answerLocked(r, rp, err)
	co.mu.Unlock()
	return nil
}

// releasePairLocked is Release for a direct checkout: taskd is told, then the pair
// closed. With calls still unanswered (the worker may be in the middle of one, or about
// to read one: taskd's view of the lease cannot say), the checkout is aborted instead,
// as taskd ends a relayed checkout released with calls outstanding: the running call is
// cancelled and the worker retired, killed unless it ends the lease within cancel_grace.
// co.mu is held.
func (co *Checkout) releasePairLocked() {
	if n := len(co.calls); n > 0 {
		co.cn.send(&wire.ClientMsg{T: wire.TAbort, Co: co.id,
			Msg: fmt.Sprintf("released with %d call(s) unanswered", n)})
	} else {
		co.cn.send(&wire.ClientMsg{T: wire.TRelease, Co: co.id})
	}
	co.pair.closeLocked()
}
