package client

import (
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
// ok/err/aborted in, in order, read by one goroutine per lease (pairReader). Everything
// else stays with taskd: release (taskd ends the lease and runs the done hook),
// abort and giving up on a call (taskd cancels the call on the worker's control channel),
// and the news that the worker was lost (lost, with taskd's reason).

// lostWait bounds how long a direct checkout whose pair reached EOF waits for taskd's lost
// message (which says why the worker went: call_timeout, killed...) before it fails with a
// plain ErrWorkerLost.
const lostWait = 500 * time.Millisecond

// pair is a direct checkout's end of its socketpair. Its fields are set at creation;
// out has its own lock, and the reader goroutine is the only reader of nc.
type pair struct {
	nc  net.Conn
	out *sendq.Queue // calls to the worker; never blocks
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

// takeLeaseFD takes the descriptor that came with direct grant m. It runs on the reader
// goroutine (cn.fds is its own).
func (cn *conn) takeLeaseFD() (*os.File, error) {
	if cn.fds == nil {
		return nil, errors.New("a direct grant on a connection that cannot carry descriptors")
	}
	return cn.fds.TakeFD()
}

// startPair makes f, the client's end of a direct lease, co's pair and starts its
// reader. c.mu is held.
func (c *Client) startPairLocked(co *Checkout, f *os.File) error {
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return fmt.Errorf("direct lease: %w", err)
	}
	co.pair = &pair{nc: nc, out: sendq.New(nc, nil)}
	c.wg.Add(1)
	go c.pairReader(co, co.pair)
	return nil
}

// closeLocked closes the pair (the reader then returns). c.mu is held.
func (p *pair) closeLocked() { p.out.Abort() }

// pairReader reads the worker's replies on a direct lease until the pair closes. EOF
// while the checkout is alive means the worker ended the lease or died: the checkout
// fails with taskd's reason (its lost message) or, if none comes within lostWait, with
// ErrWorkerLost.
func (c *Client) pairReader(co *Checkout, p *pair) {
	defer c.wg.Done()
	lr := wire.NewLineReader(fdio.NewReader(p.nc), maxLine)
	var err error
	for {
		var line []byte
		if line, err = lr.ReadLine(); err != nil {
			break
		}
		var m wire.WorkerMsg
		m, err = wire.DecodeWorkerMsg(line)
		if errors.Is(err, wire.ErrNotObject) {
			continue // not a protocol message; a worker's stdout rules do not apply here
		}
		if err == nil {
			err = c.pairReply(co, &m)
		}
		if err != nil {
			err = &wrapped{text: fmt.Sprintf("%v: the worker of %s broke the protocol on its direct lease: %v; release this checkout and check out again", ErrProtocol, co.describe(), err),
				errs: []error{ErrProtocol, ErrWorkerLost, err}}
			c.mu.Lock()
			co.fatalLocked(err, true) // taskd kills it (abort)
			c.mu.Unlock()
			break
		}
	}
	p.out.Abort() // closes nc, if Release or a fatal error did not
	<-p.out.Done()
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return // closed by this side, or a protocol error (handled above)
	}
	c.mu.Lock()
	live := !co.released && co.err == nil
	c.mu.Unlock()
	if !live {
		return
	}
	lost := &wrapped{
		text: fmt.Sprintf("%v: the worker of %s closed its direct lease (it exited or was killed); release this checkout and check out again", ErrWorkerLost, co.describe()),
		errs: []error{ErrWorkerLost},
	}
	t := time.NewTimer(lostWait)
	defer t.Stop()
	select {
	case <-co.gone: // taskd's lost message, or the application ended it
	case <-t.C:
		c.mu.Lock()
		co.fatalLocked(lost, false)
		c.mu.Unlock()
	case <-c.ctx.Done():
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
	var r json.RawMessage
	if m.T == wire.TOK {
		r = append(json.RawMessage(nil), m.R...) // m aliases the reader's buffer
	}
	c.mu.Lock()
	p := co.calls[m.ID]
	if p == nil {
		known := m.ID != 0 && m.ID <= co.nextCall
		c.mu.Unlock()
		if known || co.stateErr() != nil {
			return nil // answered after the caller gave up (the checkout failed meanwhile)
		}
		return fmt.Errorf("reply for id %d, which is not an outstanding call", m.ID)
	}
	delete(co.calls, m.ID)
	if m.T == wire.TOK && len(m.Logs) == 0 {
		p.answerLocked(r, nil)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
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
	c.mu.Lock()
	p.answerLocked(r, err)
	c.mu.Unlock()
	return nil
}

// releasePairLocked is Release for a direct checkout: taskd is told (with retire if calls
// are still unanswered: the worker may be in the middle of one), then the pair closed.
// c.mu is held.
func (co *Checkout) releasePairLocked() {
	co.c.sendLocked(co.cn, &wire.ClientMsg{T: wire.TRelease, Co: co.id, Retire: len(co.calls) > 0})
	co.pair.closeLocked()
}
