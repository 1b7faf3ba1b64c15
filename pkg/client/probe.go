package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Stalled daemons (multi.go). A daemon that accepts a connection and a request but never
// answers (stopped with SIGSTOP, wedged) fails nothing by itself: a request sent to it
// would wait for its whole deadline, and new ones would keep going there. So each attempt
// of multi.do is watched: once it has waited probeAfter, the daemon is pinged (on its
// backend's connection, as Client.Ping does) and given probeTimeout to answer.
//
//   - A pong in time: the daemon is alive, only busy (the request waits in its pool's
//     queue). The attempt goes on waiting, and is looked at again after another
//     probeAfter.
//   - No pong in time, or the ping failed: the daemon is stalled. It is banned (m.ban)
//     and counted (DaemonStats.Stalls). A checkout waiting there (keep) is abandoned:
//     its attempt's context is cancelled with errStalled as the cause, and the backend
//     sends abandon, releasing a late grant by itself (Client.giveUp); do then tries it
//     on another daemon within the same deadline — a checkout has run nothing, so moving
//     it is safe. A one-shot call is never moved (it may have run, or may still run): it
//     waits on until its deadline, and its error then says that the daemon did not answer
//     a ping. Only requests not yet sent avoid the daemon (the ban).
//
// The probes of one daemon are single-flight: the attempts waiting there share the ping
// in flight, and a pong less than probeAfter old counts as alive for all. A probe is a
// goroutine owned by the multi (m.wg: close waits for it), which ends at its ping's
// timeout, at close, or as soon as no attempt waits for it any more (the last to leave
// cancels the ping and waits for the goroutine to end), so it outlives neither the
// requests that wait for it nor the Client.
//
// The fast path (an attempt answered within probeAfter) starts no goroutine: a watch is a
// pooled time.AfterFunc timer, stopped when the attempt returns.
const (
	probeAfter   = time.Second
	probeTimeout = time.Second
)

// errStalled is the cause of the cancellation of a checkout's attempt on a daemon that
// did not answer a ping; the errors of such attempts (moved, or a one-shot call that
// waited until its deadline) match it.
var errStalled = errors.New("client: taskd did not answer a ping")

// prober is a daemon's probe state. Its lock is taken after a watch's and before
// multi.mu; nothing slow happens under it.
type prober struct {
	mu      sync.Mutex
	cur     *probe    // the probe in flight; nil if none
	aliveAt time.Time // when the daemon last answered a probe
}

// probe is one ping of a daemon, shared by the attempts that wait there.
type probe struct {
	done   chan struct{} // closed when the probe's goroutine has delivered its result
	cancel context.CancelFunc

	// Guarded by prober.mu.
	subs  []*watch // the attempts waiting for the result
	taken bool     // the result is being delivered: subs is final (nil)
}

// watch watches one attempt of multi.do (see the comment at the top). Its timer's
// function (fire) and the probe's goroutine (result) run concurrently with the attempt;
// mu orders them, and stop, called once when the attempt returns, waits until neither
// will touch the watch again on the attempt's behalf.
type watch struct {
	m      *multi
	d      *daemon
	cancel context.CancelCauseFunc // the attempt's context, for a checkout; nil for a one-shot call
	t      *time.Timer             // runs fire

	mu      sync.Mutex
	cond    sync.Cond // on mu: signalled when armed turns false
	armed   bool      // t is set, or fire is running
	over    bool      // the attempt returned (stop)
	fired   bool      // fire ran: the watch may still be referred to, and is not pooled
	p       *probe    // the probe it waits for
	stalled bool      // a probe found the daemon stalled during this attempt
}

// attempt is try on d, watched (see the comment at the top). keep says that try is a
// checkout, which may be moved.
func (m *multi) attempt(ctx context.Context, d *daemon, keep bool, try func(context.Context, *Client) error) error {
	if m.probeAfter <= 0 {
		return try(ctx, d.c)
	}
	actx := ctx
	var cancel context.CancelCauseFunc
	if keep {
		actx, cancel = context.WithCancelCause(ctx)
	}
	w := m.startWatch(d, cancel)
	err := try(actx, d.c)
	stalled := w.stop()
	if cancel != nil {
		cancel(nil)
	}
	if err == nil || !stalled || !(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err
	}
	if keep && ctx.Err() == nil && errors.Is(context.Cause(actx), errStalled) {
		return &wrapped{
			text: fmt.Sprintf("%v at %s within %v after the checkout of %q had waited %v there: it may be stopped or wedged; the checkout was abandoned there (a late grant is released) and the daemon banned", errStalled, d.addr, m.probeTimeout, m.cfg.Interface, m.probeAfter),
			errs: []error{errStalled},
		}
	}
	what := "this checkout was not moved to another daemon: the caller's context ended first"
	if !keep {
		what = "this call was not sent to another daemon, since it may have run there or may still run when that daemon resumes"
	}
	return &wrapped{
		text: fmt.Sprintf("%v; meanwhile taskd at %s did not answer a ping within %v (it may be stopped or wedged): it is banned for new requests, and %s", err, d.addr, m.probeTimeout, what),
		errs: []error{err, errStalled},
	}
}

// startWatch arms a watch of an attempt on d (a pooled one if there is one).
func (m *multi) startWatch(d *daemon, cancel context.CancelCauseFunc) *watch {
	w, _ := m.watches.Get().(*watch)
	if w == nil {
		w = &watch{m: m}
		w.cond.L = &w.mu
	}
	// Under mu, which fire takes first: what is set here happens before it runs.
	w.mu.Lock()
	w.d, w.cancel = d, cancel
	w.armed, w.over, w.stalled = true, false, false
	if w.t == nil {
		w.t = time.AfterFunc(m.probeAfter, w.fire)
	} else {
		w.t.Reset(m.probeAfter)
	}
	w.mu.Unlock()
	return w
}

// fire runs when the attempt has waited probeAfter: it joins the daemon's probe, or, if
// the daemon answered one a moment ago, looks again later.
func (w *watch) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.fired = true
	if !w.over {
		if p := w.m.join(w.d, w); p != nil {
			w.p = p
		} else {
			w.t.Reset(w.m.probeAfter) // alive a moment ago (or the Client is closing)
			return
		}
	}
	w.armed = false
	w.cond.Broadcast()
}

// result is the outcome of the probe the watch waited for: alive, or stalled.
func (w *watch) result(alive bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.p = nil
	switch {
	case !alive:
		w.stalled = true
		if !w.over && w.cancel != nil {
			w.cancel(errStalled)
		}
	case !w.over:
		w.armed = true
		w.t.Reset(w.m.probeAfter)
	}
}

// stop ends the watch when its attempt returns, and reports whether a probe found the
// daemon stalled meanwhile. Once it returns, neither the timer nor a probe acts for the
// attempt any more.
func (w *watch) stop() bool {
	w.mu.Lock()
	w.over = true
	if w.t.Stop() {
		w.armed = false
	}
	for w.armed { // fire is running, or about to
		w.cond.Wait()
	}
	p := w.p
	w.mu.Unlock()
	if p != nil {
		w.d.leave(p, w)
	}
	w.mu.Lock()
	stalled, fired := w.stalled, w.fired
	w.d, w.cancel, w.p = nil, nil, nil
	w.mu.Unlock()
	if !fired {
		w.m.watches.Put(w) // nothing else refers to it
	}
	return stalled
}

// join adds w to the probe of d in flight, starting one if there is none. It returns nil
// if d answered a probe less than probeAfter ago (it is alive), or the Client is closed.
func (m *multi) join(d *daemon, w *watch) *probe {
	pr := &d.pr
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if p := pr.cur; p != nil {
		p.subs = append(p.subs, w)
		return p
	}
	if time.Since(pr.aliveAt) < m.probeAfter {
		return nil
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.wg.Add(1)
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, m.probeTimeout)
	p := &probe{done: make(chan struct{}), cancel: cancel, subs: []*watch{w}}
	pr.cur = p
	go m.runProbe(ctx, d, p)
	return p
}

// leave takes w off probe p of d. The last to leave a probe cancels its ping; it, and a
// watch whose result is being delivered, wait for the probe's goroutine to end.
func (d *daemon) leave(p *probe, w *watch) {
	pr := &d.pr
	pr.mu.Lock()
	wait := p.taken
	if i := slices.Index(p.subs, w); i >= 0 {
		p.subs = slices.Delete(p.subs, i, i+1)
		if len(p.subs) == 0 {
			p.cancel()
			if pr.cur == p {
				pr.cur = nil // a later attempt starts a probe of its own
			}
			wait = true
		}
	}
	pr.mu.Unlock()
	if wait {
		<-p.done
	}
}

// runProbe is the goroutine of probe p of d: it pings d, and delivers the outcome to the
// attempts waiting for it. A stalled daemon is banned and counted once per probe.
func (m *multi) runProbe(ctx context.Context, d *daemon, p *probe) {
	defer m.wg.Done()
	_, err := d.c.Ping(ctx)
	p.cancel()
	// Closing (the Client, or a vanished daemon's backend) is no verdict on the daemon.
	alive := err == nil || m.ctx.Err() != nil || errors.Is(err, ErrClosed)
	pr := &d.pr
	pr.mu.Lock()
	if pr.cur == p {
		pr.cur = nil
	}
	if err == nil {
		pr.aliveAt = time.Now()
	}
	subs := p.subs
	p.subs, p.taken = nil, true
	pr.mu.Unlock()
	if !alive && len(subs) > 0 {
		d.stalls.Add(1)
		m.ban(d)
	}
	for _, w := range subs {
		w.result(alive)
	}
	close(p.done)
}
