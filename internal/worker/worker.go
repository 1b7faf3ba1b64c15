package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/taskd-dev/taskd/internal/fdio"
	"github.com/taskd-dev/taskd/internal/sendq"
	"github.com/taskd-dev/taskd/internal/wire"
)

// PassEnv lists the variables of taskd's own environment that every worker inherits. All
// others are dropped; a worker also gets its interface's env and the TASKD_* variables.
var PassEnv = []string{"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}

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
	CallTimeout     time.Duration // a call running longer kills the worker; <= 0 means none
	MaxMessageBytes int           // longest stdout line; <= 0 means wire.DefaultMaxMessageBytes
	Logger          *zap.Logger   // nil means zap.NewNop()
	// OnExit, if set, is called once from the waiter goroutine after the process has been
	// reaped and every outstanding call has been failed. It must not block.
	OnExit func(*Worker)
}

// Reply is the outcome of one call, delivered exactly once to the callback given to Call.
// Result, Error and Logs are slices of the worker's read buffer, valid only until the
// callback returns (so that relaying a reply copies nothing): use Clone to keep them.
type Reply struct {
	OK      bool            // true: Result holds "r"; false: Error holds "e" (if Err is nil)
	Aborted bool            // the worker did not run the call: its ep was behind (pipelining)
	Result  json.RawMessage // "r"
	Error   json.RawMessage // "e": {"msg","type","trace"}
	Logs    json.RawMessage // "logs", or nil
	Err     error           // non-nil: the worker ended before replying (*ExitError)
}

// Clone returns a Reply whose payloads the caller owns.
func (r Reply) Clone() Reply {
	r.Result = bytes.Clone(r.Result)
	r.Error = bytes.Clone(r.Error)
	r.Logs = bytes.Clone(r.Logs)
	return r
}

type call struct {
	id      uint64
	method  string
	started time.Time // when it became the oldest unanswered call: the one running
	r       Replier
}

// A Replier receives the reply to a call: OnReply is called exactly once, from the
// worker's stdout reader or waiter goroutine, and must not block.
type Replier interface {
	OnReply(Reply)
}

// ReplyFunc makes a function a Replier.
type ReplyFunc func(Reply)

// OnReply calls f.
func (f ReplyFunc) OnReply(r Reply) { f(r) }

// Info is a snapshot of a worker for status reports.
type Info struct {
	ID          string
	PID         int
	Started     time.Time
	Method      string    // the oldest outstanding call (the one running), if any
	CallStarted time.Time // when the worker got to it
}

// Worker is one running worker process. See the package documentation for ownership.
type Worker struct {
	cfg     Config
	log     *zap.Logger
	cmd     *exec.Cmd
	pid     int
	started time.Time

	stdout *os.File
	stderr *os.File

	// in owns stdin: callers hand it whole lines and never block on a full pipe.
	in *sendq.Queue

	mu         sync.Mutex
	calls      []call // unanswered calls in the order sent: calls[0] is the one running
	nextID     uint64
	timer      *time.Timer // call_timeout (see armLocked), made on the first call
	timerArmed bool
	cause      error // why taskd killed or stopped it (first reason wins)
	exitErr    *ExitError
	reaped     bool
	stopTimer  *time.Timer

	statMu  sync.Mutex // guards stat and statBuf
	stat    *os.File   // /proc/PID/stat, opened on the first liveness probe
	statBuf [1024]byte

	bye      atomic.Bool
	pipeline atomic.Bool   // announced in "ready": applies the ep rule itself
	ready    chan struct{} // closed on the first "ready"
	exited   chan struct{} // closed after reaping
	outDone  chan struct{} // stdout reader finished
	errDone  chan struct{} // stderr reader finished
	tail     stderrTail
	readyErr error // a protocol error before ready (guarded by mu)
}

// Start spawns the worker and waits until it reports ready, its setup_timeout passes, it
// exits, or ctx ends. On failure the process is gone (killed and reaped) and the error is a
// *StartError carrying the tail of its stderr.
func Start(ctx context.Context, cfg Config) (*Worker, error) {
	if len(cfg.Command) == 0 {
		return nil, &StartError{Interface: cfg.Interface, ID: cfg.ID, Reason: "no command configured"}
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.SetupTimeout <= 0 {
		cfg.SetupTimeout = 10 * time.Second
	}
	w := &Worker{
		cfg:     cfg,
		ready:   make(chan struct{}),
		exited:  make(chan struct{}),
		outDone: make(chan struct{}),
		errDone: make(chan struct{}),
	}
	if err := w.spawn(); err != nil {
		return nil, &StartError{Interface: cfg.Interface, ID: cfg.ID, Reason: err.Error(), Err: err}
	}
	timer := time.NewTimer(cfg.SetupTimeout)
	defer timer.Stop()
	var why error
	select {
	case <-w.ready:
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
	ee := w.Err().(*ExitError)
	reason := ee.Reason + " before it was ready"
	w.mu.Lock()
	if w.readyErr != nil && why == nil {
		reason = w.readyErr.Error()
	}
	w.mu.Unlock()
	return nil, &StartError{Interface: cfg.Interface, ID: cfg.ID, Reason: reason, StderrTail: ee.StderrTail, Err: ee}
}

func (w *Worker) spawn() (err error) {
	cfg := w.cfg
	// Three pipes; the parent keeps one end of each. Files from os.Pipe are close-on-exec
	// and use the runtime poller, so Close unblocks a pending Read or Write.
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return err
	}
	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Dir = cfg.Dir
	cmd.Env = environ(cfg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // own process group: kill(-pid) reaches its children
		Pdeathsig: syscall.SIGKILL, // dies with taskd, even on SIGKILL of taskd
	}
	err = cmd.Start()
	closeAll(inR, outW, errW) // the child's ends
	if err != nil {
		closeAll(inW, outR, errR)
		return fmt.Errorf("spawn %q: %w", cfg.Command[0], err)
	}
	w.cmd, w.pid, w.started = cmd, cmd.Process.Pid, time.Now()
	w.stdout, w.stderr = outR, errR
	w.log = cfg.Logger.With(zap.String("interface", cfg.Interface), zap.String("worker", cfg.ID), zap.Int("pid", w.pid))
	w.log.Debug("worker spawned", zap.Strings("command", cfg.Command))
	w.in = sendq.New(inW, func(err error) {
		// The worker closed its stdin, died, or stopped reading it; the waiter fails its
		// calls.
		w.Kill(fmt.Errorf("writing to worker stdin: %w", err))
	}).WithLimit(sendq.BacklogFor(maxBytes(w.cfg)))
	go w.readStdout()
	go w.readStderr()
	go w.wait()
	return nil
}

func environ(cfg Config) []string {
	env := make([]string, 0, len(PassEnv)+len(cfg.Env)+3)
	for _, k := range PassEnv {
		if v, ok := os.LookupEnv(k); ok {
			if _, override := cfg.Env[k]; !override {
				env = append(env, k+"="+v)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Env)) {
		env = append(env, k+"="+cfg.Env[k])
	}
	return append(env,
		"TASKD_INTERFACE="+cfg.Interface,
		"TASKD_WORKER_ID="+cfg.ID,
		fmt.Sprintf("TASKD_PROTOCOL=%d", wire.ProtocolVersion),
		fmt.Sprintf("TASKD_MAX_MESSAGE_BYTES=%d", maxBytes(cfg)),
	)
}

func maxBytes(cfg Config) int {
	if cfg.MaxMessageBytes <= 0 {
		return wire.DefaultMaxMessageBytes
	}
	return cfg.MaxMessageBytes
}

// ID returns the worker's id (e.g. "passwd-3").
func (w *Worker) ID() string { return w.cfg.ID }

// PID returns the worker's process id.
func (w *Worker) PID() int { return w.pid }

// Exited is closed once the process has been reaped.
func (w *Worker) Exited() <-chan struct{} { return w.exited }

// Err returns the *ExitError once the worker has exited, nil before.
func (w *Worker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.exitErr == nil {
		return nil
	}
	return w.exitErr
}

// Alive reports whether the process is still running. Besides the waiter's view it asks
// the kernel (waitid with WNOWAIT, which does not reap), so a worker killed a moment ago
// from outside is seen as dead before the waiter has noticed.
func (w *Worker) Alive() bool {
	w.mu.Lock()
	dead := w.reaped || w.cause != nil
	w.mu.Unlock()
	if dead {
		return false
	}
	// Raw system calls: neither blocks (WNOHANG; a procfs read), and they spare the
	// runtime's system-call bookkeeping on a path taken by every checkout.
	var info unix.Siginfo
	_, _, e := unix.RawSyscall6(unix.SYS_WAITID, unix.P_PID, uintptr(w.pid), uintptr(unsafe.Pointer(&info)),
		unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
	if e != 0 {
		return e != unix.ECHILD
	}
	if siginfoPid(&info) != 0 {
		return false
	}
	return !w.dying()
}

// dying reports whether a process that has not exited yet is on its way: kill(2) marks
// SIGKILL pending on every thread before it returns, and an exiting task has PF_EXITING
// set, both visible in /proc/PID/stat. A multi-threaded process can take a while from
// there to the exit that wait reports. The file stays open for the worker's life, so a
// probe is one pread.
func (w *Worker) dying() bool {
	w.statMu.Lock()
	defer w.statMu.Unlock()
	if w.stat == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/stat", w.pid))
		if err != nil {
			return true
		}
		w.stat = f
	}
	n, err := fdio.Pread(w.stat.Fd(), w.statBuf[:], 0)
	if n == 0 || err != nil {
		return true
	}
	return statDying(w.statBuf[:n])
}

// statDying reads a /proc/PID/stat line: the process is a zombie or dead, is exiting
// (PF_EXITING in the flags), or has SIGKILL pending. It does not allocate.
func statDying(b []byte) bool {
	i := bytes.LastIndexByte(b, ')') // the command may contain anything, ")" included
	if i < 0 {
		return false
	}
	// Fields after the command: state (3rd field overall), ..., flags (9th), ...,
	// signal (31st: the pending-signal bitmap).
	const (
		fState   = 0
		fFlags   = 6
		fPending = 28
	)
	var state byte
	var flags, pending uint64
	field := -1
	for j := i + 1; j < len(b) && field < fPending; {
		for j < len(b) && (b[j] == ' ' || b[j] == '\n') {
			j++
		}
		if j == len(b) {
			break
		}
		field++
		k := j
		for k < len(b) && b[k] != ' ' && b[k] != '\n' {
			k++
		}
		switch field {
		case fState:
			state = b[j]
		case fFlags:
			flags = parseUint(b[j:k])
		case fPending:
			pending = parseUint(b[j:k])
		}
		j = k
	}
	if field < fPending {
		return false // not a stat line we understand: do not call a live worker dead
	}
	const pfExiting = 0x4
	return state == 'Z' || state == 'X' || state == 'x' ||
		flags&pfExiting != 0 || pending&(1<<(syscall.SIGKILL-1)) != 0
}

// parseUint reads a decimal number as strconv.ParseUint does, without the error: 0 if
// b is not a number, the largest uint64 if it overflows first.
func parseUint(b []byte) uint64 {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return math.MaxUint64
		}
		n = n*10 + d
	}
	return n
}

// ByeRequested reports whether the worker has asked to be retired.
func (w *Worker) ByeRequested() bool { return w.bye.Load() }

// Info returns a snapshot for status reports.
func (w *Worker) Info() Info {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := Info{ID: w.cfg.ID, PID: w.pid, Started: w.started}
	if len(w.calls) > 0 {
		in.Method, in.CallStarted = w.calls[0].method, w.calls[0].started
	}
	return in
}

// Pipelined reports whether the worker announced pipelining in its ready message: it may
// be sent several calls at once, each with an ep (see CallEp).
func (w *Worker) Pipelined() bool { return w.pipeline.Load() }

// Call sends a call and arranges for done to be called exactly once with its reply, from
// the worker's stdout reader or waiter goroutine (done must not block). args must be a JSON
// array. If Call returns an error (the worker has exited or is being killed), done is never
// called.
func (w *Worker) Call(method string, args json.RawMessage, done func(Reply)) (uint64, error) {
	return w.CallEp(method, args, 0, ReplyFunc(done))
}

// CallEp is Call with the application's error count for the call's checkout (its "ep"),
// sent to workers that pipeline; such a worker answers Aborted instead of running a call
// whose ep is behind its own count of errors. The reply goes to r.
func (w *Worker) CallEp(method string, args json.RawMessage, ep uint64, r Replier) (uint64, error) {
	return w.call(method, args, ep, r)
}

func (w *Worker) call(method string, args json.RawMessage, ep uint64, r Replier) (uint64, error) {
	w.mu.Lock()
	if err := w.deadLocked(); err != nil {
		w.mu.Unlock()
		return 0, err
	}
	w.nextID++
	id := w.nextID
	w.calls = append(w.calls, call{id: id, method: method, r: r}) // by value: no allocation
	if len(w.calls) == 1 {
		w.armLocked()
	}
	w.mu.Unlock()

	if !w.pipeline.Load() {
		ep = wire.NoEp // only a pipelining worker applies the ep rule
	}
	w.in.Append(func(b []byte) []byte { return wire.AppendCall(b, 0, id, ep, method, args) })
	return id, nil
}

// armLocked starts the call_timeout of w.calls[0]: it is now the oldest unanswered call,
// so the worker is running it (calls are answered in order). w.mu is held.
//
// One timer serves all calls and is not moved as they come and go, which would cost a
// timer operation per call: armed, it fires at the deadline of the call that was running
// then, and checkTimeout re-arms it for the call running at that moment.
func (w *Worker) armLocked() {
	w.calls[0].started = time.Now()
	d := w.cfg.CallTimeout
	if d <= 0 || w.timerArmed || w.exitErr != nil {
		return
	}
	w.timerArmed = true
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.checkTimeout)
	} else {
		w.timer.Reset(d)
	}
}

// checkTimeout is the call_timeout timer's function: it kills the worker if the call
// running now has run for call_timeout, and otherwise waits for that call's deadline.
func (w *Worker) checkTimeout() {
	w.mu.Lock()
	w.timerArmed = false
	if len(w.calls) == 0 || w.exitErr != nil {
		w.mu.Unlock()
		return
	}
	c, d := w.calls[0], w.cfg.CallTimeout
	if left := d - time.Since(c.started); left > 0 {
		w.timerArmed = true
		w.timer.Reset(left)
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	w.Kill(fmt.Errorf("%w: call %q ran longer than %s", ErrCallTimeout, c.method, d))
}

func nilIfEmpty(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	return b
}

// indexLocked returns the position of unanswered call id in w.calls, or -1. Calls are
// answered in order, so it is almost always 0. w.mu is held.
func (w *Worker) indexLocked(id uint64) int {
	for i := range w.calls {
		if w.calls[i].id == id {
			return i
		}
	}
	return -1
}

// deadLocked returns the error for calls on a worker that is gone or going. w.mu is held.
func (w *Worker) deadLocked() error {
	if w.exitErr != nil {
		return w.exitErr
	}
	if w.cause != nil {
		return fmt.Errorf("worker %s (pid %d) is being stopped: %w", w.cfg.ID, w.pid, w.cause)
	}
	return nil
}

// Cancel tells the worker that the caller gave up on call id (best effort: the reply is
// still owed and still delivered).
func (w *Worker) Cancel(id uint64) {
	w.mu.Lock()
	ok := w.indexLocked(id) >= 0
	w.mu.Unlock()
	if ok {
		w.in.Append(func(b []byte) []byte { return wire.AppendCancel(b, id) })
	}
}

// Done tells the worker that its checkout was released. It fails if the worker's stdin is
// closed (the worker is stopping or gone).
// A done may follow a call before its reply: the worker runs its checkout-done hook after
// answering.
func (w *Worker) Done() error {
	if !w.in.Send(wire.DoneLine) {
		return fmt.Errorf("worker %s: stdin closed", w.cfg.ID)
	}
	return nil
}

// Cork holds back writes to the worker's stdin until Uncork, so that the messages sent in
// between (say a call and the checkout's done) reach the worker in one write and cost it
// one wake-up. Corks nest; Uncork must follow Cork on the same goroutine, without
// blocking in between.
func (w *Worker) Cork() { w.in.Cork() }

// Uncork ends a Cork and writes what it held back.
func (w *Worker) Uncork() { w.in.Uncork() }

// Kill sends SIGKILL to the worker's process group. cause says why; the first cause given
// is the one reported. Kill is idempotent and does not wait: see Exited.
func (w *Worker) Kill(cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cause == nil {
		w.cause = cause
	}
	if !w.reaped {
		_ = syscall.Kill(-w.pid, syscall.SIGKILL)
	}
}

// Stop retires the worker gracefully: it closes the worker's stdin (EOF means "exit now"),
// sends SIGTERM to the process group after grace, and SIGKILL after another grace. It does
// not wait (see Exited) and is idempotent; cause is reported to calls still outstanding.
func (w *Worker) Stop(cause error, grace time.Duration) {
	w.mu.Lock()
	if w.cause == nil {
		w.cause = cause
	}
	if w.reaped || w.stopTimer != nil {
		w.mu.Unlock()
		return
	}
	w.stopTimer = time.AfterFunc(grace, func() {
		w.signalGroup(syscall.SIGTERM)
		w.mu.Lock()
		if !w.reaped {
			w.stopTimer = time.AfterFunc(grace, func() { w.signalGroup(syscall.SIGKILL) })
		}
		w.mu.Unlock()
	})
	w.mu.Unlock()
	w.in.Close()
}

func (w *Worker) signalGroup(sig syscall.Signal) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.reaped {
		_ = syscall.Kill(-w.pid, sig)
	}
}

// readStdout owns the protocol decoder. It runs until the pipe reaches EOF or is closed.
func (w *Worker) readStdout() {
	defer close(w.outDone)
	lr := wire.NewLineReader(fdio.NewReader(w.stdout), maxBytes(w.cfg))
	for {
		line, err := lr.ReadLine()
		if err != nil {
			var tooLong *wire.LineTooLongError
			if errors.As(err, &tooLong) {
				w.protocolError(&wire.ProtocolError{
					Reason:  fmt.Sprintf("stdout line longer than %d bytes (max_message_bytes)", tooLong.Limit),
					Snippet: tooLong.Snippet})
				continue
			}
			return
		}
		msg, err := wire.DecodeWorkerMsg(line)
		if errors.Is(err, wire.ErrNotObject) {
			w.log.Warn("stray stdout line ignored (not a JSON object); workers must write only protocol messages to stdout",
				zap.String("line", wire.Snippet(line)))
			continue
		}
		if err != nil {
			w.protocolError(err)
			continue
		}
		switch msg.T {
		case wire.TReady:
			select {
			case <-w.ready:
			default:
				w.pipeline.Store(msg.Pipeline)
				close(w.ready)
			}
		case wire.TOK, wire.TErr, wire.TAborted:
			w.deliver(line, msg)
		case wire.TBye:
			w.bye.Store(true)
			w.log.Info("worker asked to be retired", zap.String("msg", msg.Msg))
		}
	}
}

func (w *Worker) deliver(line []byte, msg wire.WorkerMsg) {
	w.mu.Lock()
	i := w.indexLocked(msg.ID)
	var r Replier
	if i >= 0 {
		r = w.calls[i].r
		w.calls = slices.Delete(w.calls, i, i+1)
		// The next unanswered call is the one the worker runs now: its timeout starts.
		if len(w.calls) > 0 && w.calls[0].started.IsZero() {
			w.armLocked()
		}
	}
	w.mu.Unlock()
	if r == nil {
		w.protocolError(wire.NewProtocolError(line, "reply for id %d, which is not an outstanding call", msg.ID))
		return
	}
	// The payloads alias the line buffer: no copy on the relay path (see Reply).
	r.OnReply(Reply{OK: msg.T == wire.TOK, Aborted: msg.T == wire.TAborted,
		Result: msg.R, Error: nilIfEmpty(msg.E), Logs: nilIfEmpty(msg.Logs)})
}

func (w *Worker) protocolError(err error) {
	w.log.Error("worker broke the protocol; killing it", zap.Error(err))
	w.mu.Lock()
	if w.readyErr == nil {
		w.readyErr = err
	}
	w.mu.Unlock()
	w.Kill(err)
}

// stderrChunk bounds one log entry made from stderr: longer lines are split.
const stderrChunk = 4 << 10

func (w *Worker) readStderr() {
	defer close(w.errDone)
	br := bufio.NewReaderSize(w.stderr, stderrChunk)
	partial := false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			full := err == nil
			text := string(trimNewline(chunk))
			if full || len(text) > 0 {
				fields := []zap.Field{zap.String("stream", "stderr")}
				if partial || !full {
					fields = append(fields, zap.Bool("split", true))
				}
				w.log.Info(text, fields...)
				w.tail.add(text)
			}
			partial = !full
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// wait reaps the process, kills what is left of its process group, lets its pipes drain
// (closing them after drainWait), classifies the exit, and fails every call still
// outstanding.
func (w *Worker) wait() {
	waitErr := w.cmd.Wait() // the pipes are *os.File: Wait starts no copiers and closes none of ours
	w.mu.Lock()
	w.reaped = true
	if w.stopTimer != nil {
		w.stopTimer.Stop()
	}
	w.mu.Unlock()
	// A child of the worker may outlive it and hold the pipes; it must not outlive the pool.
	_ = syscall.Kill(-w.pid, syscall.SIGKILL)
	drain := time.NewTimer(drainWait)
	for _, ch := range []chan struct{}{w.outDone, w.errDone} {
		select {
		case <-ch:
		case <-drain.C:
			w.stdout.Close()
			w.stderr.Close()
			<-ch
		}
	}
	drain.Stop()
	closeAll(w.stdout, w.stderr)
	w.in.Abort()
	<-w.in.Done()
	w.statMu.Lock()
	if w.stat != nil {
		w.stat.Close()
		w.stat = nil
	}
	w.statMu.Unlock()

	w.mu.Lock()
	ee := &ExitError{Interface: w.cfg.Interface, ID: w.cfg.ID, PID: w.pid, Cause: w.cause, StderrTail: w.tail.lines()}
	ee.Reason = classify(w.cmd.ProcessState, waitErr, w.cause)
	w.exitErr = ee
	calls := w.calls // in the order sent
	w.calls = nil
	if w.timer != nil {
		w.timer.Stop()
		w.timerArmed = false
	}
	w.mu.Unlock()

	for _, c := range calls {
		c.r.OnReply(Reply{Err: ee})
	}
	lvl := zap.WarnLevel
	if errors.Is(ee.Cause, ErrStopped) {
		lvl = zap.DebugLevel
	}
	w.log.Log(lvl, "worker exited", zap.String("reason", ee.Reason), zap.Int("failed_calls", len(calls)))
	close(w.exited)
	if w.cfg.OnExit != nil {
		w.cfg.OnExit(w)
	}
}

// classify turns a wait status into the text that reaches callers and logs.
func classify(ps *os.ProcessState, waitErr error, cause error) string {
	var how string
	switch {
	case ps == nil:
		how = fmt.Sprintf("could not be waited for (%v)", waitErr)
	default:
		ws, _ := ps.Sys().(syscall.WaitStatus)
		switch {
		case ws.Exited() && ws.ExitStatus() == 0:
			how = "exited cleanly (status 0)"
		case ws.Exited():
			how = fmt.Sprintf("exited with status %d", ws.ExitStatus())
		case ws.Signaled():
			how = "killed by signal " + unix.SignalName(ws.Signal())
			if ws.CoreDump() {
				how += " (core dumped)"
			}
		default:
			how = ps.String()
		}
	}
	if cause != nil {
		if errors.Is(cause, ErrStopped) {
			return fmt.Sprintf("%s (%v)", how, cause)
		}
		return fmt.Sprintf("was killed by taskd: %v (%s)", cause, how)
	}
	return how
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// stderrTail keeps the last few stderr lines for error messages.
type stderrTail struct {
	mu  sync.Mutex
	buf []string
}

const (
	tailLines   = 8
	tailLineMax = 300
)

func (t *stderrTail) add(line string) {
	if len(line) > tailLineMax {
		line = line[:tailLineMax] + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == tailLines {
		copy(t.buf, t.buf[1:])
		t.buf = t.buf[:tailLines-1]
	}
	t.buf = append(t.buf, line)
}

func (t *stderrTail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
