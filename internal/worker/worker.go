package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/sandbox"
)

// drainWait bounds how long the waiter waits for a dead worker's pipes to reach EOF (a
// grandchild may hold them open) before it closes them.
const drainWait = time.Second

// Config describes one worker process. It is read, never modified.
type Config struct {
	Interface       string
	ID              string // unique per daemon, e.g. "passwd-3"
	Command         []string
	Dir             string
	Env             map[string]string
	SetupTimeout    time.Duration // spawn until "ready"; <= 0 means 10s
	CallTimeout     time.Duration // a call running longer is interrupted (see Interrupt); <= 0 means none
	CancelGrace     time.Duration // how long Interrupt waits for answers before it kills; <= 0: it kills at once
	MaxMessageBytes int           // longest stdout line; <= 0 means wire.DefaultMaxMessageBytes
	Logger          *zap.Logger   // nil means zap.NewNop()
	Stderr          StderrLimit   // what of its stderr is logged (the zero value: all); see SetStderrLimit
	// StderrDropped, if set, counts the stderr lines dropped over Stderr's rate limit. The
	// workers of an interface may share one counter (a metric).
	StderrDropped *atomic.Uint64
	// StderrLine, if set, is called with each stderr line that is logged, as logged (cut
	// at Stderr's LineMax; with LineMax off, each 4 KiB piece of a long line), the pid,
	// and the time it was read. Lines dropped over the rate limit are not passed. It is
	// called on the stderr reader goroutine: it must not block.
	StderrLine func(pid int, at time.Time, line string)
	// Identity, if set, is the user and groups the worker runs as (isolation.go); nil:
	// taskd's own.
	Identity *Identity
	// Sandbox is the umask and rlimits the worker runs under. Unless it is empty, the
	// worker is started through sandbox's helper, taskd's own executable: its main must
	// call sandbox.Main first thing.
	Sandbox sandbox.Spec
	// OnExit, if set, is called once from the waiter goroutine after the process has been
	// reaped and every outstanding call has been failed. It must not block.
	OnExit func(*Worker)
	// Cgroup, if set, is the cgroup v2 the worker is started in, atomically
	// (CLONE_INTO_CGROUP): the worker and all it starts are in it from their first
	// instruction. Start takes it over: the waiter calls its Release once the process has
	// been reaped (killing whatever the worker left in it, grandchildren in sessions of
	// their own included), or Start does at once if the process could not be spawned.
	Cgroup Cgroup
	// Direct spawns the worker with a control channel and a stats page (TASKD_CONTROL_FD,
	// TASKD_STATS_FD) so that, if it announces "lease" on ready, it can serve direct
	// leases (direct.go).
	Direct bool
}

// Cgroup is the cgroup a worker runs in (internal/cgroup.Worker is the daemon's).
type Cgroup interface {
	FD() int  // an open descriptor of the cgroup's directory, valid until Release
	Release() // kills every process left in the cgroup and removes it; may block briefly
}

// Info is a snapshot of a worker for status reports.
type Info struct {
	ID          string
	PID         int
	Started     time.Time
	Method      string    // the oldest outstanding call (the one running), if any
	CallStarted time.Time // when the worker got to it
}

// Worker is one running worker process: its process (spawn, stderr, signals, reaping,
// liveness) and its protocol connection (calls, replies, timeouts, stdin), and the waiter
// goroutine that ties their ends together. See the package documentation for who owns
// which goroutine. Every method is safe for concurrent use.
type Worker struct {
	cfg    Config
	log    *zap.Logger
	p      process
	c      conn
	d      *direct       // nil unless spawned with Config.Direct and set up (direct.go)
	exited chan struct{} // closed by the waiter, last
}

// Start spawns the worker and waits until it reports ready, its setup_timeout passes, it
// exits, or ctx ends. On failure the process is gone (killed and reaped) and the error is a
// *StartError carrying the tail of its stderr.
func Start(ctx context.Context, cfg Config) (*Worker, error) {
	if len(cfg.Command) == 0 {
		if cfg.Cgroup != nil {
			cfg.Cgroup.Release()
		}
		return nil, &StartError{Interface: cfg.Interface, ID: cfg.ID, Reason: "no command configured"}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.SetupTimeout <= 0 {
		cfg.SetupTimeout = 10 * time.Second
	}
	w := &Worker{cfg: cfg, exited: make(chan struct{})}
	stdin, stdout, err := w.p.start(cfg)
	if err != nil {
		if cfg.Cgroup != nil {
			cfg.Cgroup.Release()
		}
		return nil, &StartError{Interface: cfg.Interface, ID: cfg.ID, Reason: err.Error(), Err: err}
	}
	w.log = w.p.log
	w.c.init(cfg, w.log, stdin, stdout, w.Kill)
	if w.p.ctl != nil {
		w.initDirect(w.p.ctl, w.p.stats) // before the stdout reader: "ready" may announce leases
		w.p.ctl, w.p.stats = nil, nil
	}
	w.c.start()
	go w.wait()

	timer := time.NewTimer(cfg.SetupTimeout)
	defer timer.Stop()
	var why error
	select {
	case <-w.c.ready:
		return w, nil
	case <-w.exited:
	case <-timer.C:
		why = fmt.Errorf("%w: no ready message within %s", ErrSetupTimeout, cfg.SetupTimeout)
	case <-ctx.Done():
		why = fmt.Errorf("start abandoned: %w", ctx.Err())
	}
	if why != nil {
		w.Kill(why)
		<-w.exited
	}
	ee := w.p.err().(*ExitError)
	reason := ee.Reason + " before it was ready"
	if perr := w.c.protocolErr(); perr != nil && why == nil {
		reason = perr.Error()
	}
	return nil, &StartError{Interface: cfg.Interface, ID: cfg.ID, Reason: reason, StderrTail: ee.StderrTail, Err: ee}
}

// wait is the waiter goroutine, started by Start; it returns by itself once the process
// has exited and everything else of the worker's is gone. It reaps the process, lets
// both pipes drain (closing them after drainWait) so that the stdout and stderr readers
// return, stops the send queue, classifies the exit, fails every call still outstanding,
// and closes Exited. It is the only goroutine that waits for the others.
func (w *Worker) wait() {
	waitErr := w.p.reap()
	late := make(chan struct{})
	drain := time.AfterFunc(drainWait, func() { close(late) })
	w.c.drain(late)
	w.p.drain(late)
	drain.Stop()

	ee := w.p.exit(w.cfg, waitErr)
	failed := w.c.fail(ee)
	if w.d != nil {
		w.d.exit(ee)
	}
	lvl := zap.WarnLevel
	if errors.Is(ee.Cause, ErrStopped) {
		lvl = zap.DebugLevel
	}
	w.log.Log(lvl, "worker exited", zap.String("reason", ee.Reason), zap.Int("failed_calls", failed))
	close(w.exited)
	if w.cfg.OnExit != nil {
		w.cfg.OnExit(w)
	}
}

// ID returns the worker's id (e.g. "passwd-3").
func (w *Worker) ID() string { return w.cfg.ID }

// PID returns the worker's process id.
func (w *Worker) PID() int { return w.p.pid }

// Exited is closed once the process has been reaped and every outstanding call failed.
func (w *Worker) Exited() <-chan struct{} { return w.exited }

// Err returns the *ExitError once the worker has exited, nil before.
func (w *Worker) Err() error { return w.p.err() }

// Alive reports whether the process is still running: taskd has not killed or stopped
// it, and the kernel says it has not exited and is not exiting, so that a worker killed a
// moment ago from outside is seen as dead before the waiter has noticed. It does not
// allocate, except to open /proc/PID/stat on the first call.
func (w *Worker) Alive() bool { return w.p.alive() }

// ByeRequested reports whether the worker has asked to be retired.
func (w *Worker) ByeRequested() bool { return w.c.bye.Load() }

// Info returns a snapshot for status reports.
func (w *Worker) Info() Info {
	in := Info{ID: w.cfg.ID, PID: w.p.pid, Started: w.p.started}
	if w.d != nil {
		if m, at, leased := w.d.running(); leased {
			in.Method, in.CallStarted = m, at
			return in
		}
	}
	in.Method, in.CallStarted = w.c.running()
	return in
}

// Pipelined reports whether the worker announced pipelining in its ready message: it may
// be sent several calls at once, each with an ep (see CallEp).
func (w *Worker) Pipelined() bool { return w.c.pipeline.Load() }

// Call sends a call and arranges for done to be called exactly once with its reply, from
// the worker's stdout reader or waiter goroutine (done must not block). args must be a JSON
// array. If Call returns an error (the worker has exited or is being killed), done is never
// called.
func (w *Worker) Call(method string, args json.RawMessage, done func(Reply)) (uint64, error) {
	return w.c.call(method, args, 0, ReplyFunc(done))
}

// CallEp is Call with the application's error count for the call's checkout (its "ep"),
// sent to workers that pipeline; such a worker answers Aborted instead of running a call
// whose ep is behind its own count of errors. The reply goes to r.
func (w *Worker) CallEp(method string, args json.RawMessage, ep uint64, r Replier) (uint64, error) {
	return w.c.call(method, args, ep, r)
}

// SetCallTimeout changes the worker's call_timeout (<= 0: none) for the calls it runs from
// now on, and for the one running now, whose deadline moves accordingly. Safe for
// concurrent use.
func (w *Worker) SetCallTimeout(d time.Duration) {
	w.c.setCallTimeout(d)
	if w.d != nil {
		w.d.rescan()
	}
}

// SetStderrLimit changes the worker's StderrLimit, from the next line of its stderr on.
func (w *Worker) SetStderrLimit(l StderrLimit) { w.p.setStderrLimit(l) }

// SetCancelGrace changes the worker's cancel_grace (<= 0: none) for its interrupts from now
// on. Safe for concurrent use.
func (w *Worker) SetCancelGrace(d time.Duration) { w.c.setCancelGrace(d) }

// Interrupt gives up the worker's calls for cause (the caller gave up, aborted, or
// released its checkout with calls outstanding): the worker gets a cancel for each call
// still unanswered and CancelGrace to answer them, and is killed with cause if it has
// not. Its calls are answered at once with an error wrapping cause; what the worker
// answers later is dropped. With no CancelGrace it is killed at once (as by Kill). The
// worker takes no more calls: its holder retires it once settled is called (see
// conn.interrupt for when); settled may be nil. call_timeout interrupts a worker by
// itself, with a cause wrapping ErrCallTimeout.
func (w *Worker) Interrupt(cause error, settled func()) { w.c.interrupt(cause, settled) }

// Cancel tells the worker that the caller gave up on call id (best effort: the reply is
// still owed and still delivered).
func (w *Worker) Cancel(id uint64) { w.c.cancel(id) }

// Done tells the worker that its checkout was released. It fails if the worker's stdin is
// closed (the worker is stopping or gone).
// A done may follow a call before its reply: the worker runs its checkout-done hook after
// answering.
func (w *Worker) Done() error { return w.c.done() }

// Cork holds back writes to the worker's stdin until Uncork, so that the messages sent in
// between (say a call and the checkout's done) reach the worker in one write and cost it
// one wake-up. Corks nest; Uncork must follow Cork on the same goroutine, without
// blocking in between.
func (w *Worker) Cork() { w.c.in.Cork() }

// Uncork ends a Cork and writes what it held back.
func (w *Worker) Uncork() { w.c.in.Uncork() }

// Kill sends SIGKILL to the worker's process group. cause says why; the first cause given
// is the one reported, unless the worker was already on its way out (killed from outside,
// crashed, exited): then it is reported as it ended, and its calls fail with that once it
// has been reaped. Calls made after Kill fail. Kill is idempotent and does not wait: see
// Exited.
func (w *Worker) Kill(cause error) {
	if w.p.kill(cause) {
		w.c.refuse(w.stopping(cause))
	}
}

// Stop retires the worker gracefully: it closes the worker's stdin (EOF means "exit now"),
// sends SIGTERM to the process group after grace, and SIGKILL after another grace. It does
// not wait (see Exited) and is idempotent; cause is reported to calls still outstanding.
func (w *Worker) Stop(cause error, grace time.Duration) {
	if w.p.stop(cause, grace) {
		w.c.refuse(w.stopping(cause))
	}
	w.c.closeInput()
}

// stopping is the error of a call made after Kill or Stop, before the worker has exited.
func (w *Worker) stopping(cause error) error {
	return fmt.Errorf("worker %s (pid %d) is being stopped: %w", w.cfg.ID, w.p.pid, cause)
}
