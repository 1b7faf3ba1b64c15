package worker

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/lease"
)

// Direct leases (docs/worker-protocol.md, "Direct leases"): a worker spawned with
// Config.Direct gets a control channel (a SOCK_SEQPACKET socketpair) and a stats page (a
// memfd it maps and publishes its calls in). If it announces "lease" on ready, its holder
// may hand it a lease: the worker's end of a socketpair whose other end goes to the
// client, which then speaks protocol v1 with the worker directly. The worker still
// enforces call_timeout (by scanning the stats page), reports the running call for status,
// and ends leases in order with the stdin stream ("end", then "ended" on control).

// leaseCounts are the calls of one lease, read from the stats page: how many it started,
// answered, and answered with err.
type leaseCounts struct{ calls, done, errs uint64 }

// LeaseEnd is how a direct lease ended, given to the callback of EndLease or
// InterruptLease.
type LeaseEnd struct {
	// Err is nil if the worker said "ended" (it closed its end and ran its done hook);
	// else why it did not: it exited or is being killed (an *ExitError once it has exited).
	Err error
	// Calls, OK and Errs count the lease's calls, as the stats page says: started,
	// answered ok, answered with err.
	Calls, OK, Errs uint64
	// Interrupted says the lease was interrupted (InterruptLease, or an EndLease that
	// found a call running on the lease): the worker should be retired.
	Interrupted bool
}

// direct is a worker's side of the lease extension. Goroutines: the control reader
// (started by initDirect; returns at EOF on control or when closeDirect closes it; waited
// for by the waiter). Timers: the call_timeout scan (armed while a lease is held and the
// worker has a call_timeout) and an interrupt's cancel_grace. Every method is safe for
// concurrent use.
type direct struct {
	w       *Worker
	ctl     *lease.Conn
	ctlDone chan struct{}

	mu     sync.Mutex
	page   *lease.Page // nil once unmapped (the waiter, at exit)
	nextID uint64
	cur    *held
	gone   error // the worker exited: no more leases
}

// held is the lease handed out now.
type held struct {
	id         uint64
	base       lease.Snap
	lost       func(error) // called once (lostCalled) if the lease ends abnormally: call_timeout, exit
	lostCalled bool
	done       func(LeaseEnd) // EndLease's or InterruptLease's: called once, when it ended
	ending     bool           // "end" was sent
	endAsked   time.Time      // when EndLease asked for the end
	// Set by an interrupt: the worker serves no more calls, and is killed unless the
	// lease ends within cancel_grace.
	interrupted error
	grace       *time.Timer
	scan        *time.Timer // call_timeout
	endWatch    *time.Timer // EndLease's look for a call running on the lease
}

// initDirect sets up the lease side from the parent's end of the control channel and the
// stats page's memfd (both closed here), and starts the control reader. On error the
// worker simply serves no leases.
func (w *Worker) initDirect(ctl, stats *os.File) {
	defer stats.Close()
	page, err := lease.Map(int(stats.Fd()), false)
	if err != nil {
		ctl.Close()
		w.log.Warn("no direct leases for this worker", zap.Error(err))
		return
	}
	c, err := lease.NewConn(ctl)
	if err != nil {
		page.Unmap()
		w.log.Warn("no direct leases for this worker", zap.Error(err))
		return
	}
	w.d = &direct{w: w, ctl: c, ctlDone: make(chan struct{}), page: page}
	go w.d.readControl()
}

// LeaseCapable reports whether the worker may be handed a direct lease: it was spawned
// with Config.Direct, announced "lease" on ready, and is not going away.
func (w *Worker) LeaseCapable() bool {
	return w.d != nil && w.c.leaseVer.Load() >= lease.Version && w.c.refusedErr() == nil
}

// GrantLease hands the worker a direct lease: it sends {"t":"lease","id":L} on control with
// end (the worker's end of the pair; the caller closes its copy afterwards). lost, if not
// nil, is called once, from a worker goroutine, if the lease ends abnormally before
// EndLease or InterruptLease end it: a call ran past call_timeout (the worker is then
// being interrupted) or the worker exited; it must not block. One lease at a time.
func (w *Worker) GrantLease(end *os.File, lost func(error)) (uint64, error) {
	d := w.d
	if d == nil {
		return 0, errors.New("worker was not spawned for direct leases")
	}
	if err := w.c.refusedErr(); err != nil {
		return 0, err
	}
	d.mu.Lock()
	if d.gone != nil || d.page == nil {
		d.mu.Unlock()
		return 0, fmt.Errorf("worker %s has exited", w.cfg.ID)
	}
	if d.cur != nil {
		d.mu.Unlock()
		return 0, fmt.Errorf("worker %s holds lease %d already", w.cfg.ID, d.cur.id)
	}
	d.nextID++
	h := &held{id: d.nextID, lost: lost}
	h.base, _ = d.page.Read()
	d.cur = h
	d.mu.Unlock()
	if err := d.ctl.Send(lease.Msg{T: lease.TLease, ID: h.id}, end); err != nil {
		d.mu.Lock()
		d.cur = nil
		d.mu.Unlock()
		w.Kill(fmt.Errorf("writing to the worker's control channel: %w", err))
		return 0, fmt.Errorf("worker %s: sending the lease: %w", w.cfg.ID, err)
	}
	d.armScan(h, 0)
	return h.id, nil
}

// EndLease ends the worker's lease in order: it sends "end" and calls done once the
// worker answers "ended" (with Err nil), or once it exits or is killed first. The worker
// must not be handed to anyone before done is called. done is called from a worker
// goroutine (or at once) and must not block.
func (w *Worker) EndLease(done func(LeaseEnd)) {
	d := w.d
	d.mu.Lock()
	h := d.cur
	if h == nil || h.done != nil {
		d.mu.Unlock()
		done(LeaseEnd{Err: errors.New("no lease to end")})
		return
	}
	h.done = done
	send := !h.ending
	h.ending = true
	h.endAsked = time.Now()
	if h.interrupted == nil {
		h.endWatch = time.AfterFunc(endWatchEvery, func() { d.watchEnd(h) })
	}
	d.mu.Unlock()
	if send {
		d.sendEnd(h)
	}
}

// endWatchEvery is how often a lease that EndLease is ending is checked for a call
// running on it, until it has ended.
const endWatchEvery = 100 * time.Millisecond

// watchEnd is the timer of a lease being ended in order. Its client released it with no
// call running as far as the stats page could say, but a call it had written may have
// started just then: the worker finishes a call it has read before it ends the lease,
// and nobody waits for that call. So a call seen running on the lease interrupts it
// (cancel, cancel_grace, kill), as a release with a call running does; so does a lease
// that has not ended within call_timeout (when one is set); else the timer looks again
// later.
func (d *direct) watchEnd(h *held) {
	d.mu.Lock()
	if d.cur != h || h.interrupted != nil || d.page == nil {
		d.mu.Unlock()
		return
	}
	s, _ := d.page.Read()
	if s.CurID == 0 || s.Lease != h.id {
		limit := d.w.c.callTimeoutNow()
		if limit <= 0 || time.Since(h.endAsked) < limit {
			h.endWatch.Reset(endWatchEvery)
			d.mu.Unlock()
			return
		}
		// No "ended" within call_timeout: its done hook hangs (or it lost the "end").
		// Waiting on would keep the worker from the pool for ever; in a relayed checkout
		// the done hook would hold up the next checkout's first call, which call_timeout
		// bounds the same way.
		d.mu.Unlock()
		d.w.InterruptLease(fmt.Errorf("its lease did not end within call_timeout (%s) after its checkout was released: it never answered \"end\" (a done hook that hangs?)", limit), nil)
		return
	}
	d.mu.Unlock()
	d.w.InterruptLease(fmt.Errorf("its checkout was released as call %q started on its lease: nobody waits for that call", s.Method), nil)
}

// InterruptLease gives up the lease for cause (its client aborted, gave up on a call, or
// is gone with a call running; call_timeout): the call running on it (the stats page
// says which) gets a cancel on control, the lease an "end", and the worker cancel_grace
// to end it; it is killed with cause if it has not by then (at once with no grace).
// done is called once the lease ended or the worker is gone (Err then says why). Such a
// worker should be retired: the cancel may have left it in the middle of something. Only
// the first interrupt acts; later ones (and an EndLease pending) keep their done.
func (w *Worker) InterruptLease(cause error, done func(LeaseEnd)) {
	d := w.d
	d.mu.Lock()
	h := d.cur
	if h == nil {
		gone := d.gone
		d.mu.Unlock()
		if done != nil {
			done(LeaseEnd{Err: gone})
		}
		return
	}
	if done != nil && h.done == nil {
		h.done = done
	}
	if h.interrupted != nil {
		d.mu.Unlock()
		return
	}
	h.interrupted = cause
	var cancel uint64
	if s, ok := d.page.Read(); ok && s.CurID != 0 && s.Lease == h.id {
		cancel = s.CurID
	}
	sendEnd := !h.ending
	h.ending = true
	grace := w.c.cancelGraceNow()
	if grace > 0 {
		h.grace = time.AfterFunc(grace, func() {
			w.Kill(fmt.Errorf("%w (its lease did not end within cancel_grace, %s, after the cancel)", cause, grace))
		})
	}
	d.mu.Unlock()
	if grace <= 0 {
		w.Kill(cause)
		return
	}
	if cancel != 0 {
		d.send(lease.Msg{T: lease.TCancel, ID: cancel})
	}
	if sendEnd {
		d.sendEnd(h)
	}
}

// LeaseCounts returns the calls of the lease held now (started, answered ok, answered
// with err), as the stats page says; zeros if none is held.
func (w *Worker) LeaseCounts() (calls, ok, errs uint64) {
	d := w.d
	if d == nil {
		return 0, 0, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil {
		return 0, 0, 0
	}
	c := d.countsLocked(d.cur)
	return c.calls, c.done - c.errs, c.errs
}

func (d *direct) countsLocked(h *held) leaseCounts {
	if d.page == nil {
		return leaseCounts{}
	}
	s, ok := d.page.Read()
	if !ok {
		return leaseCounts{}
	}
	return leaseCounts{calls: s.Calls - h.base.Calls, done: s.Done - h.base.Done, errs: s.Errs - h.base.Errs}
}

// running returns the call running on the current lease, if any.
func (d *direct) running() (method string, started time.Time, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil || d.page == nil {
		return "", time.Time{}, false
	}
	s, _ := d.page.Read()
	if s.CurID == 0 || s.Lease != d.cur.id {
		return "", time.Time{}, true
	}
	return s.Method, s.CurStart, true
}

func (d *direct) sendEnd(h *held) { d.send(lease.Msg{T: lease.TEnd, ID: h.id}) }

// send sends m on control; a worker that cannot be told is killed (its exit ends the
// lease).
func (d *direct) send(m lease.Msg) {
	if err := d.ctl.Send(m, nil); err != nil {
		d.w.Kill(fmt.Errorf("writing to the worker's control channel: %w", err))
	}
}

// finish ends lease h with e (the lease's counts filled in), if it is still the current
// one, and calls its done.
func (d *direct) finish(h *held, e LeaseEnd) {
	d.mu.Lock()
	if d.cur != h {
		d.mu.Unlock()
		return
	}
	c := d.countsLocked(h)
	d.cur = nil
	if h.grace != nil {
		h.grace.Stop()
	}
	if h.scan != nil {
		h.scan.Stop()
	}
	if h.endWatch != nil {
		h.endWatch.Stop()
	}
	done := h.done
	e.Interrupted = h.interrupted != nil
	d.mu.Unlock()
	e.Calls, e.OK, e.Errs = c.calls, c.done-c.errs, c.errs
	if done != nil {
		done(e)
	}
}

// readControl is the control reader: "ended" ends the current lease, "bye" asks for
// retirement; unknown types are ignored, a packet that is not a control message is a
// protocol error (the worker is killed).
func (d *direct) readControl() {
	defer close(d.ctlDone)
	defer crash.OnPanic(d.w.log, "worker control")
	for {
		m, err := d.ctl.Recv()
		if errors.Is(err, lease.ErrPacket) {
			d.w.c.protocolError(fmt.Errorf("control channel: %w", err))
			continue
		}
		if err != nil {
			return
		}
		switch m.T {
		case lease.TEnded:
			d.mu.Lock()
			h := d.cur
			ok := h != nil && h.id == m.ID && h.ending
			d.mu.Unlock()
			if !ok {
				d.w.c.protocolError(fmt.Errorf(`control channel: "ended" for lease %d, which was not being ended`, m.ID))
				continue
			}
			d.finish(h, LeaseEnd{})
		case lease.TBye:
			d.w.c.bye.Store(true)
			d.w.log.Info("worker asked to be retired", zap.String("msg", m.Msg))
		}
	}
}

// armScan arms the call_timeout scan of lease h to fire after wait (0: after the
// call_timeout), unless the worker has no call_timeout.
func (d *direct) armScan(h *held, wait time.Duration) {
	t := d.w.c.callTimeoutNow()
	if t <= 0 {
		return
	}
	if wait <= 0 {
		wait = t
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != h || h.interrupted != nil {
		return
	}
	if h.scan == nil {
		h.scan = time.AfterFunc(wait, func() { d.scan(h) })
	} else {
		h.scan.Reset(wait)
	}
}

// scan is the call_timeout timer of a lease. It reads the stats page: a call running on
// the lease past its deadline interrupts the lease (lost first, with ErrCallTimeout);
// else it sleeps until the running call's deadline, or for a whole call_timeout if none
// runs (a call that starts meanwhile has a later deadline). So it wakes once per
// call_timeout while calls are short, and at a hung call's deadline exactly.
func (d *direct) scan(h *held) {
	t := d.w.c.callTimeoutNow()
	if t <= 0 {
		return
	}
	d.mu.Lock()
	if d.cur != h || h.interrupted != nil || d.page == nil {
		d.mu.Unlock()
		return
	}
	s, _ := d.page.Read()
	d.mu.Unlock()
	if s.CurID == 0 || s.Lease != h.id {
		d.armScan(h, t)
		return
	}
	if left := time.Until(s.CurStart.Add(t)); left > 0 {
		d.armScan(h, left)
		return
	}
	err := fmt.Errorf("%w: call %q ran longer than %s", ErrCallTimeout, s.Method, t)
	d.callLost(h, err)
	// Killed at once, without the cancel and cancel_grace of a relayed call: a worker
	// that answered the cancel would reach the client over the pair before taskd's lost
	// message does, and the caller would see the worker's cancellation error instead of
	// ErrCallTimeout. Until the client can order the two, the kill is what keeps the
	// error true.
	d.w.Kill(err)
}

// rescan makes the scan of the lease held now look again at once (call_timeout changed).
func (d *direct) rescan() {
	d.mu.Lock()
	h := d.cur
	d.mu.Unlock()
	if h != nil {
		d.armScan(h, time.Nanosecond)
	}
}

// callLost calls h's lost callback with err, the first time only.
func (d *direct) callLost(h *held, err error) {
	d.mu.Lock()
	call := !h.lostCalled && h.lost != nil
	h.lostCalled = true
	d.mu.Unlock()
	if call {
		h.lost(err)
	}
}

// exit is the waiter's, once the process is reaped: it closes the control channel, waits
// for its reader, ends the current lease with ee (lost, unless its holder was ending or
// interrupting it, then done), and unmaps the page.
func (d *direct) exit(ee *ExitError) {
	d.ctl.Close() // the reader returns, even if a child of the worker holds the other end
	<-d.ctlDone
	d.mu.Lock()
	d.gone = ee
	h := d.cur
	lost := h != nil && !h.ending && h.interrupted == nil
	d.mu.Unlock()
	if h != nil {
		if lost {
			d.callLost(h, ee)
		}
		d.finish(h, LeaseEnd{Err: ee})
	}
	d.mu.Lock()
	d.page.Unmap()
	d.page = nil
	d.mu.Unlock()
}
