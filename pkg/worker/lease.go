package worker

import (
	"errors"
	"io"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/wire"
)

// leaseVersion is the version of the direct-lease extension this SDK speaks
// (docs/worker-protocol.md, "Direct leases").
const leaseVersion = 1

// Control messages of the lease extension (the wire package decodes them as WorkerMsgs).
const (
	tLease  = "lease"  // taskd → worker, with the lease socket as SCM_RIGHTS
	tEnd    = "end"    // taskd → worker: end lease id
	tEnded  = "ended"  // worker → taskd: lease id is over, its hook has run
	tCancel = "cancel" // taskd → worker: cancel the leased call with this id
)

// leaseConn is a lease's socket: the stream's input and output.
type leaseConn interface {
	io.ReadWriter
	stopReading() // makes a pending and every later Read return EOF
	Close() error
}

// leaseRun is one direct lease: a stream of its own whose runner goroutine serves the
// lease's socket until taskd ends the lease. Its fields are set before its goroutine
// starts; end is closed once, by endOnce.
type leaseRun struct {
	id      uint64
	st      *stream
	conn    leaseConn
	end     chan struct{} // closed when taskd ended the lease or serve is exiting
	endOnce sync.Once
}

// leases is the server's set of running leases (one at a time when taskd behaves).
type leases struct {
	mu      sync.Mutex
	m       map[uint64]*leaseRun
	exiting bool // serve is returning: no hook, no "ended", no new lease
	wg      sync.WaitGroup
}

// startLease starts serving lease id on conn. The control reader calls it.
func (s *server) startLease(id uint64, conn leaseConn) {
	lr := &leaseRun{id: id, st: s.newStream(id, conn, conn), conn: conn, end: make(chan struct{})}
	s.leases.mu.Lock()
	if s.leases.exiting || s.leases.m[id] != nil {
		s.leases.mu.Unlock()
		conn.Close()
		return
	}
	if s.leases.m == nil {
		s.leases.m = make(map[uint64]*leaseRun)
	}
	s.leases.m[id] = lr
	s.leases.wg.Add(1)
	s.leases.mu.Unlock()
	go s.runLease(lr)
}

// runLease is a lease's goroutine: it runs the stream (in a goroutine of its own, which a
// Func's runtime.Goexit may replace), then waits for the end, closes the socket, runs
// CheckoutDone and tells taskd "ended".
func (s *server) runLease(lr *leaseRun) {
	defer s.leases.wg.Done()
	done := make(chan error, 1)
	go lr.st.loop(nil, done)
	err := <-done
	if errors.Is(err, errDoneFailed) {
		lr.conn.Close()
		s.fail(err)
		return
	}
	if err != nil && err != errExit {
		s.log.Warn("worker: giving up on a lease's input until taskd ends it", zap.Uint64("lease", lr.id), zap.Error(err))
	}
	<-lr.end // the client's end may close first: the lease lasts until taskd ends it
	lr.conn.Close()
	s.leases.mu.Lock()
	delete(s.leases.m, lr.id)
	exiting := s.leases.exiting
	s.leases.mu.Unlock()
	if exiting {
		return
	}
	if s.spec.CheckoutDone != nil {
		s.execMu.Lock()
		s.started(lr.st, 0, "")
		err := isolated(s.ctx, s.spec.CheckoutDone)
		s.ended(false, false)
		s.execMu.Unlock()
		if err != nil {
			s.fail(lr.st.finishDoneError(err))
			return
		}
	}
	s.sendControl(appendControl(nil, tEnded, lr.id))
}

// stop ends the lease: nothing more is read from it; the calls already read are answered.
func (lr *leaseRun) stop() {
	lr.endOnce.Do(func() {
		lr.st.mu.Lock()
		lr.st.stopped = true
		lr.st.mu.Unlock()
		lr.st.signal()
		lr.conn.stopReading()
		close(lr.end)
	})
}

// endLease handles taskd's "end" for lease id.
func (s *server) endLease(id uint64) {
	s.leases.mu.Lock()
	lr := s.leases.m[id]
	s.leases.mu.Unlock()
	if lr == nil {
		// Unknown or already over: say so, so that taskd is never left waiting.
		s.sendControl(appendControl(nil, tEnded, id))
		return
	}
	lr.stop()
}

// cancelLeased handles taskd's "cancel" on the control socket.
func (s *server) cancelLeased(id uint64) {
	s.leases.mu.Lock()
	defer s.leases.mu.Unlock()
	for _, lr := range s.leases.m {
		lr.st.cancel(id)
	}
}

// stopLeases stops every lease for good: serve is returning.
func (s *server) stopLeases() {
	s.leases.mu.Lock()
	s.leases.exiting = true
	runs := make([]*leaseRun, 0, len(s.leases.m))
	for _, lr := range s.leases.m {
		runs = append(runs, lr)
	}
	s.leases.mu.Unlock()
	for _, lr := range runs {
		lr.stop()
	}
}

// waitLeases stops the leases and waits for their goroutines until grace fires (or
// exitGrace if grace is nil); it reports whether they all returned.
func (s *server) waitLeases(grace <-chan time.Time) bool {
	s.stopLeases()
	done := make(chan struct{})
	go func() {
		s.leases.wg.Wait()
		close(done)
	}()
	if grace == nil {
		t := time.NewTimer(exitGrace)
		defer t.Stop()
		grace = t.C
	}
	select {
	case <-done:
		return true
	case <-grace:
		return false
	}
}

// fail ends serve with err (a lease's CheckoutDone failed).
func (s *server) fail(err error) {
	select {
	case s.fatal <- err:
	default:
	}
}

// sendControl sends one message to taskd on the control socket, if there is one.
func (s *server) sendControl(msg []byte) {
	if s.ctl == nil {
		return
	}
	if err := s.ctl.send(msg); err != nil {
		s.log.Debug("worker: writing to taskd's control socket", zap.Error(err))
	}
}

// controlMsg handles one message from the control socket; fd is the descriptor that came
// with it (-1 if none), which it owns.
func (s *server) controlMsg(m wire.WorkerMsg, conn leaseConn) {
	switch m.T {
	case tLease:
		if conn == nil {
			s.log.Warn("worker: taskd sent a lease without its socket; ending it", zap.Uint64("lease", m.ID))
			s.sendControl(appendControl(nil, tEnded, m.ID))
			return
		}
		s.startLease(m.ID, conn)
		return
	case tEnd:
		s.endLease(m.ID)
	case tCancel:
		s.cancelLeased(m.ID)
	}
	if conn != nil {
		conn.Close()
	}
}

// appendControl appends {"t":T,"id":ID}, one control packet.
func appendControl(buf []byte, t string, id uint64) []byte {
	buf = append(append(append(buf, `{"t":"`...), t...), `","id":`...)
	return append(strconv.AppendUint(buf, id, 10), '}')
}

// finishDoneError wraps a failed CheckoutDone's error as finishDone does.
func (st *stream) finishDoneError(err error) error {
	p := errorPayload(err)
	if p.Trace != "" {
		st.s.log.Error("worker: CheckoutDone failed", zap.String("trace", p.Trace))
	}
	return errCheckoutDone(err)
}
