package worker

import (
	"errors"
	"fmt"
	"maps"
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

	"github.com/taskd-dev/taskd/internal/lease"
	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/wire"
)

// PassEnv lists the variables of taskd's own environment that every worker inherits. All
// others are dropped; a worker also gets its interface's env and the TASKD_* variables.
var PassEnv = []string{"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"}

// process is a worker's operating-system process: it spawns it with its environment,
// logs its stderr and keeps the tail, signals it (Kill, and Stop's escalation), reaps it,
// classifies its exit, and probes whether it is still alive. It knows nothing of the
// protocol: the stdin and stdout that start returns belong to the conn.
//
// Goroutines and timers: start starts the stderr reader, which returns at EOF on stderr
// or when drain closes the pipe. stop arms the escalation timers; reap stops them. The
// waiter that calls reap, drain and exit, in that order, is the Worker's.
//
// start comes first; reap, drain and exit are the waiter's alone. The other methods are
// safe for concurrent use.
type process struct {
	// Set by start, read-only after.
	log     *zap.Logger // with the interface, worker id and pid
	cmd     *exec.Cmd
	pid     int
	started time.Time
	stderr  *os.File
	errDone chan struct{} // closed when the stderr reader returns
	tail    stderrTail
	dropped *atomic.Uint64                           // Config.StderrDropped
	onLine  func(pid int, at time.Time, line string) // Config.StderrLine
	limit   atomic.Pointer[StderrLimit]
	stat    *procfs.StatFile // /proc/PID/stat for the liveness probe; closed by drain
	cgroup  Cgroup           // Config.Cgroup: released by reap
	// Config.Direct: taskd's end of the control channel and the stats page's memfd, for
	// the Worker to take (initDirect) right after start.
	ctl, stats *os.File

	mu        sync.Mutex
	cause     error       // why taskd wants it gone (the first reason given wins); see classify
	acted     bool        // taskd acted on it while it lived: signalled it, or Stop closed its stdin
	sent      uint64      // the signals taskd sent it while it lived (bit sig-1); see sendLocked
	reaped    bool        // Wait has returned: the pid may be reused, signal nothing
	stopTimer *time.Timer // Stop's next escalation step
	exitErr   *ExitError  // set by exit
}

// start spawns the process (argv, never a shell) in its own process group with a clean
// environment, and starts the stderr reader. It returns the parent's ends of the
// process's stdin and stdout. On error nothing is left running or open.
func (p *process) start(cfg Config) (stdin, stdout *os.File, err error) {
	// Three pipes; the parent keeps one end of each. Files from os.Pipe are close-on-exec
	// and use the runtime poller, so Close unblocks a pending Read or Write.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW)
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		closeAll(inR, inW, outR, outW)
		return nil, nil, err
	}
	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Dir = cfg.Dir
	cmd.Env = environ(cfg)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,            // own process group: kill(-pid) reaches its children
		Pdeathsig: syscall.SIGKILL, // dies with taskd, even on SIGKILL of taskd
	}
	var ctlChild *os.File
	if cfg.Direct {
		// Descriptors 3 and 4 of the worker (ExtraFiles), through the sandbox helper's
		// exec too: they are not close-on-exec in the child.
		var err error
		if p.ctl, ctlChild, p.stats, err = directFiles(); err != nil {
			closeAll(inR, inW, outR, outW, errR, errW)
			return nil, nil, err
		}
		cmd.ExtraFiles = []*os.File{ctlChild, p.stats}
		cmd.Env = append(cmd.Env, lease.EnvControlFD+"=3", lease.EnvStatsFD+"=4")
	}
	if err := isolate(cmd, cfg); err != nil { // user, umask, rlimits: isolation.go
		closeAll(inR, inW, outR, outW, errR, errW)
		p.closeDirect(ctlChild)
		return nil, nil, err
	}
	if cfg.Cgroup != nil {
		// Started straight into its cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7).
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, cfg.Cgroup.FD()
	}
	err = cmd.Start()
	closeAll(inR, outW, errW) // the child's ends
	if ctlChild != nil {
		ctlChild.Close()
	}
	if err != nil {
		closeAll(inW, outR, errR)
		p.closeDirect(nil)
		return nil, nil, fmt.Errorf("spawn %q: %w", cfg.Command[0], err)
	}
	p.cmd, p.pid, p.started = cmd, cmd.Process.Pid, time.Now()
	p.cgroup = cfg.Cgroup
	p.stderr, p.errDone, p.dropped, p.onLine = errR, make(chan struct{}), cfg.StderrDropped, cfg.StderrLine
	p.setStderrLimit(cfg.Stderr)
	p.stat = procfs.NewStatFile(p.pid)
	p.log = cfg.Logger.With(zap.String("interface", cfg.Interface), zap.String("worker", cfg.ID), zap.Int("pid", p.pid))
	p.log.Debug("worker spawned", zap.Strings("command", cfg.Command))
	go p.readStderr()
	return inW, outR, nil
}

// directFiles makes a worker's control channel (taskd's end, the worker's end) and its
// stats page.
func directFiles() (ctl, child, stats *os.File, err error) {
	ctl, child, err = lease.Pair(unix.SOCK_SEQPACKET)
	if err != nil {
		return nil, nil, nil, err
	}
	stats, err = lease.NewStatsFile()
	if err != nil {
		closeAll(ctl, child)
		return nil, nil, nil, err
	}
	return ctl, child, stats, nil
}

// closeDirect closes the direct-lease files of a spawn that failed (child, if not nil, too).
func (p *process) closeDirect(child *os.File) {
	for _, f := range []*os.File{p.ctl, p.stats, child} {
		if f != nil {
			f.Close()
		}
	}
	p.ctl, p.stats = nil, nil
}

// setStderrLimit sets the limit the stderr reader applies from its next line on.
func (p *process) setStderrLimit(l StderrLimit) { p.limit.Store(&l) }

func environ(cfg Config) []string {
	env := make([]string, 0, len(PassEnv)+len(cfg.Env)+4)
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

// kill records cause (if it is the first) and sends SIGKILL to the process group unless
// the process has been reaped. It reports whether cause was the first one given and the
// process was alive when it was sent: a process already on its way out (killed from
// outside, crashed, exited) did not die of taskd's kill, and its calls fail with how it
// really ended, once the waiter has reaped it.
func (p *process) kill(cause error) (first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first = p.setCauseLocked(cause)
	live := p.sendLocked(syscall.SIGKILL)
	return first && live
}

// stop records cause (if it is the first) and, unless the process has been reaped or is
// stopping already, arms the escalation: SIGTERM to the process group after grace,
// SIGKILL after another grace. Closing stdin, the first step, is the Worker's. It
// reports whether cause was the first one given.
func (p *process) stop(cause error, grace time.Duration) (first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first = p.setCauseLocked(cause)
	if p.reaped || p.stopTimer != nil {
		return first
	}
	if p.liveLocked() {
		p.acted = true // the EOF on stdin that the Worker sends is taskd's doing
	}
	p.stopTimer = time.AfterFunc(grace, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.reaped {
			p.sendLocked(syscall.SIGTERM)
			p.stopTimer = time.AfterFunc(grace, func() { p.signal(syscall.SIGKILL) })
		}
	})
	return first
}

func (p *process) setCauseLocked(cause error) bool {
	if p.cause != nil {
		return false
	}
	p.cause = cause
	return true
}

// signal sends sig to the process group unless the process has been reaped.
func (p *process) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sendLocked(sig)
}

// sendLocked sends sig to the process group unless the process has been reaped, and
// records it as taskd's doing (sent, acted) if the process was alive and not on its way
// out when it was sent. It reports whether so. p.mu is held.
//
// This is how an exit is attributed (see classify): Linux's siginfo for a child's exit
// (waitid's si_code CLD_KILLED, si_status) says which signal killed it but not who sent
// it, so taskd remembers what it sent itself. kill(2) marks SIGKILL pending on every
// thread before it returns, and an exiting process has PF_EXITING, so a process killed a
// moment ago from outside is seen as dying here (procfs.Stat.Dying), and taskd's own
// SIGKILL that follows is not taken for the one that killed it.
func (p *process) sendLocked(sig syscall.Signal) bool {
	if p.reaped {
		return false
	}
	live := p.liveLocked()
	_ = syscall.Kill(-p.pid, sig)
	if live {
		p.sent |= sigBit(sig)
		p.acted = true
	}
	return live
}

// liveLocked asks the kernel whether the process is alive and not on its way out. p.mu is
// held and the process not reaped (so the probe's file is open).
func (p *process) liveLocked() bool { return !p.exited() && !p.stat.Dying() }

func sigBit(sig syscall.Signal) uint64 { return 1 << (uint(sig) - 1) }

// alive reports whether the process is still running. Besides what taskd did to it, it
// asks the kernel, so that a worker killed a moment ago from outside is seen as dead
// before the waiter has noticed: waitid (WNOWAIT: it does not reap) says whether it has
// exited, and /proc/PID/stat whether it is on its way (procfs.StatFile.Dying). After
// the first call it does not allocate: the pool probes an idle worker on every checkout.
func (p *process) alive() bool {
	p.mu.Lock()
	dead := p.reaped || p.cause != nil
	p.mu.Unlock()
	if dead {
		return false
	}
	if p.exited() {
		return false
	}
	return !p.stat.Dying()
}

// exited asks the kernel whether the process has exited (and is not reaped yet), with
// waitid(P_PID, WEXITED|WNOHANG|WNOWAIT). Linux sets si_signo to SIGCHLD when waitid
// reports a child and to 0 when WNOHANG finds none, so Siginfo.Signo, a named field of
// unix.Siginfo on every architecture, is the answer: nothing depends on where si_pid sits
// in the union that follows. ECHILD means it has been reaped already.
//
// A raw system call: it cannot block (WNOHANG), and it spares the runtime's system-call
// bookkeeping, which on a daemon idle between messages wakes the runtime's monitor
// thread; the probe runs on every checkout of an idle worker.
func (p *process) exited() bool {
	var info unix.Siginfo
	_, _, e := unix.RawSyscall6(unix.SYS_WAITID, unix.P_PID, uintptr(p.pid), uintptr(unsafe.Pointer(&info)),
		unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
	if e != 0 {
		return e == unix.ECHILD
	}
	return info.Signo != 0
}

// reap waits for the process to exit (the waiter calls it, once), stops Stop's
// escalation, and kills what is left of the process group, and of its cgroup if it has
// one (Config.Cgroup): a child of the worker may outlive it and hold its pipes, and must
// not outlive the pool.
func (p *process) reap() (waitErr error) {
	waitErr = p.cmd.Wait() // the pipes are *os.File: Wait starts no copiers and closes none of ours
	p.mu.Lock()
	p.reaped = true
	if p.stopTimer != nil {
		p.stopTimer.Stop()
	}
	p.mu.Unlock()
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	if p.cgroup != nil {
		p.cgroup.Release() // and whatever left the process group: the whole cgroup
	}
	return waitErr
}

// drain waits for the stderr reader to reach EOF, or until late is closed (a grandchild
// may hold the pipe open), closes stderr, and closes the liveness probe's file. The
// waiter calls it after reap.
func (p *process) drain(late <-chan struct{}) {
	select {
	case <-p.errDone:
	case <-late:
		p.stderr.Close()
		<-p.errDone
	}
	p.stderr.Close()
	p.stat.Close()
}

// exit classifies how the process ended, from reap's error, the cause taskd gave and what
// taskd did to it, and records the result for err. The waiter calls it after drain, so
// the stderr tail is complete.
func (p *process) exit(cfg Config, waitErr error) *ExitError {
	p.mu.Lock()
	defer p.mu.Unlock()
	reason, cause := classify(p.cmd.ProcessState, waitErr, p.cause, p.acted, p.sent)
	p.exitErr = &ExitError{Interface: cfg.Interface, ID: cfg.ID, PID: p.pid, Cause: cause,
		Reason: reason, StderrTail: p.tail.lines()}
	return p.exitErr
}

// err returns the *ExitError once exit has run, nil before.
func (p *process) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exitErr == nil {
		return nil
	}
	return p.exitErr
}

// classify turns a wait status into the text that reaches callers and logs, and says
// whether taskd's cause is what ended the process (else it returns a nil cause: the
// worker ended on its own).
//
// taskd ended it only if it acted on the live process (sent it a signal, or closed its
// stdin for Stop) and the process did not die of a signal that taskd did not send. A
// cause given when the process was already on its way out — a write to its stdin failing
// with EPIPE because it was killed from outside, say — is not what ended it, and neither
// is taskd's SIGKILL to a process that a SIGKILL from outside had killed first.
func classify(ps *os.ProcessState, waitErr error, cause error, acted bool, sent uint64) (string, error) {
	var how string
	outside := false
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
			if sent&sigBit(ws.Signal()) == 0 && !selfInflicted[ws.Signal()] {
				outside = true
				how += " from outside taskd"
			}
			if ws.CoreDump() {
				how += " (core dumped)"
			}
		default:
			how = ps.String()
		}
	}
	switch {
	case cause == nil || !acted || outside:
		return how, nil
	case errors.Is(cause, ErrStopped):
		return fmt.Sprintf("%s (%v)", how, cause), cause
	}
	return fmt.Sprintf("was killed by taskd: %v (%s)", cause, how), cause
}

// selfInflicted are the signals a process brings on itself (a fault, abort(3), a write
// to a closed pipe, a resource limit): a death by one of them is a crash, not a kill
// "from outside taskd".
var selfInflicted = map[syscall.Signal]bool{
	syscall.SIGSEGV: true, syscall.SIGBUS: true, syscall.SIGILL: true, syscall.SIGFPE: true,
	syscall.SIGABRT: true, syscall.SIGTRAP: true, syscall.SIGSYS: true, syscall.SIGPIPE: true,
	syscall.SIGXCPU: true, syscall.SIGXFSZ: true,
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		f.Close()
	}
}
