package taskdproc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/taskd-dev/taskd/internal/procfs"
)

// Options say how Start runs taskd. Zero values mean the defaults noted.
type Options struct {
	Bin  string // the taskd binary (required)
	YAML string // the whole config file except `listen`, which Start adds

	// Dir holds the config file, the unix sockets and the log. "" means a new temporary
	// directory, which Stop removes. A directory the caller gives stays (so that another
	// daemon can be started on the same socket path); the caller removes it. A unix socket
	// path has at most 107 bytes: keep Dir short.
	Dir string

	WorkDir string   // taskd's working directory; default Dir
	Env     []string // added to this process's environment, as "KEY=value"

	// NoWait makes Start return once the process has started, without waiting for READY=1:
	// for a daemon that is expected to fail at start.
	NoWait bool

	ReadyTimeout time.Duration // how long Start waits for READY=1; default 30s

	// Sockets are listening sockets handed to taskd as systemd's socket activation hands
	// them: as descriptors 3, 4, ... with LISTEN_FDS, LISTEN_FDNAMES (the files' names,
	// which must not contain ':') and LISTEN_PID set to taskd's own pid (Start runs taskd
	// through `sh -c 'export LISTEN_PID=$$; exec ...'`, as systemd sets it between fork
	// and exec). They stay the caller's: it keeps them open across restarts, as systemd
	// does, and closes them.
	Sockets []*os.File

	// Cgroup, if set, is an open cgroup v2 directory that taskd is started in, atomically
	// (CLONE_INTO_CGROUP): a stand-in for the cgroup systemd delegates to the service
	// (Delegate=yes), for tests of taskd's worker cgroups. It stays the caller's.
	Cgroup *os.File
}

// Daemon is a taskd process started by Start. Its fields are set by Start and must not be
// changed; its methods are safe for concurrent use. The caller owns the process: call
// Stop, once the daemon is no longer needed, whether or not it has exited.
type Daemon struct {
	Dir     string    // where the config, the sockets and the log are
	Addr    string    // "unix:" + Socket, as client.Config.Addr takes it
	Socket  string    // the path of the unix socket taskd listens on
	Config  string    // the path of the config file
	Log     string    // the path of taskd's log (its stdout and stderr)
	Started time.Time // just before the process was started
	Ready   time.Time // when READY=1 arrived (zero with Options.NoWait)

	cmd    *exec.Cmd
	ownDir bool // Start made Dir: Stop removes it

	nconn   *net.UnixConn // the notify socket; nil with NoWait
	nfile   string        // its path
	ready   chan struct{} // closed by the notify reader when READY=1 arrives
	nreader chan struct{} // closed when the notify reader has ended
	nmu     sync.Mutex
	notes   []string // notifications received, one line each; guarded by nmu

	exited  chan struct{} // closed by the waiter goroutine when the process has exited
	waitErr error         // written by the waiter goroutine before it closes exited

	stopOnce sync.Once
	stopErr  error

	mu      sync.Mutex
	removed bool   // Dir is gone; guarded by mu
	logs    string // the log as it was when Dir was removed; guarded by mu
}

const (
	defaultReadyTimeout = 30 * time.Second
	goneTimeout         = 5 * time.Second // how long Stop gives the daemon's workers to be gone
	logTail             = 4 << 10         // bytes of the log that errors quote
)

// Start starts taskd as Options say and, unless NoWait, waits until it reports READY=1.
// ctx bounds only that wait, not the life of the process. On error nothing is left running
// and a directory Start made is removed; the error quotes the end of taskd's log.
func Start(ctx context.Context, o Options) (*Daemon, error) {
	if o.Bin == "" {
		return nil, errors.New("taskdproc: Options.Bin is empty: give the path of a taskd binary")
	}
	d := &Daemon{Dir: o.Dir, exited: make(chan struct{}), ready: make(chan struct{}), nreader: make(chan struct{})}
	if d.Dir == "" {
		dir, err := os.MkdirTemp("", "taskd-")
		if err != nil {
			return nil, fmt.Errorf("taskdproc: %w", err)
		}
		d.Dir, d.ownDir = dir, true
	}
	fail := func(err error) (*Daemon, error) {
		d.removeDir()
		return nil, fmt.Errorf("taskdproc: %w", err)
	}
	d.Socket = filepath.Join(d.Dir, "taskd.sock")
	d.Addr = "unix:" + d.Socket
	d.Config = filepath.Join(d.Dir, "taskd.yaml")
	if err := os.WriteFile(d.Config, fmt.Appendf(nil, "listen: [%q]\n%s", d.Addr, o.YAML), 0o600); err != nil {
		return fail(err)
	}
	// A log file per start: several daemons may share a directory.
	logf, err := os.CreateTemp(d.Dir, "taskd-*.log")
	if err != nil {
		return fail(err)
	}
	defer logf.Close() // taskd has its own descriptor
	d.Log = logf.Name()

	notify := "" // NOTIFY_SOCKET="" keeps taskd from notifying a systemd this process may run under
	if !o.NoWait {
		// A file per start: several daemons may share a directory.
		notify = filepath.Join(d.Dir, fmt.Sprintf("notify-%s.sock", strings.TrimSuffix(strings.TrimPrefix(filepath.Base(d.Log), "taskd-"), ".log")))
		d.nconn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
		if err != nil {
			return fail(err)
		}
		d.nfile = notify
	}

	d.cmd = exec.Command(o.Bin, "-c", d.Config)
	env := append(os.Environ(), "NOTIFY_SOCKET="+notify)
	if len(o.Sockets) > 0 {
		names := make([]string, len(o.Sockets))
		for i, f := range o.Sockets {
			names[i] = f.Name()
		}
		env = append(env, fmt.Sprintf("LISTEN_FDS=%d", len(o.Sockets)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
		// sh sets LISTEN_PID to its own pid, which exec gives to taskd.
		d.cmd = exec.Command("/bin/sh", "-c", `export LISTEN_PID=$$; exec "$0" "$@"`, o.Bin, "-c", d.Config)
		d.cmd.ExtraFiles = o.Sockets
	}
	if o.Cgroup != nil {
		d.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(o.Cgroup.Fd())}
	}
	d.cmd.Dir = cmp.Or(o.WorkDir, d.Dir)
	d.cmd.Env = append(env, o.Env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if d.nconn != nil {
		go d.readNotify()
	} else {
		close(d.nreader)
	}
	d.Started = time.Now()
	if err := d.cmd.Start(); err != nil {
		d.closeNotify()
		return fail(err)
	}
	go func() {
		err := d.cmd.Wait()
		d.closeNotify()
		d.waitErr = err
		close(d.exited)
	}()
	if o.NoWait {
		return d, nil
	}
	if err := d.waitReady(ctx, cmp.Or(o.ReadyTimeout, defaultReadyTimeout)); err != nil {
		err = fmt.Errorf("taskdproc: %w; taskd's log ends:\n%s", err, d.LogTail(logTail))
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.removeDir()
		return nil, err
	}
	return d, nil
}

// waitReady waits for READY=1.
func (d *Daemon) waitReady(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-d.ready:
		d.Ready = time.Now()
		return nil
	case <-d.exited:
		return fmt.Errorf("taskd exited before it reported READY=1 (%v)", d.waitErr)
	case <-t.C:
		return fmt.Errorf("taskd did not report READY=1 within %v", timeout)
	case <-ctx.Done():
		return fmt.Errorf("waiting for taskd to report READY=1: %w", ctx.Err())
	}
}

// readNotify is the notify reader: it records the notifications that arrive on the notify
// socket, and closes ready at READY=1, until closeNotify closes the socket.
func (d *Daemon) readNotify() {
	defer close(d.nreader)
	buf := make([]byte, 4096)
	for {
		n, _, err := d.nconn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		d.record(buf[:n])
	}
}

// record adds the lines of one notification to the daemon's notifications.
func (d *Daemon) record(msg []byte) {
	d.nmu.Lock()
	defer d.nmu.Unlock()
	for _, line := range strings.Split(string(msg), "\n") {
		if line == "" {
			continue
		}
		if line == "READY=1" && !d.readySeen() {
			close(d.ready)
		}
		d.notes = append(d.notes, line)
	}
}

// readySeen reports whether ready is closed. The caller holds nmu.
func (d *Daemon) readySeen() bool {
	select {
	case <-d.ready:
		return true
	default:
		return false
	}
}

// closeNotify is called once the process has exited (or failed to start): it reads what
// taskd sent and the reader has not read yet, ends the reader, and removes the socket.
func (d *Daemon) closeNotify() {
	if d.nconn == nil {
		return
	}
	// Every datagram taskd sent is queued by now; read them without waiting.
	if rc, err := d.nconn.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			buf := make([]byte, 4096)
			for {
				n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_DONTWAIT)
				if err != nil || n <= 0 {
					return
				}
				d.record(buf[:n])
			}
		})
	}
	d.nconn.Close()
	<-d.nreader
	_ = os.Remove(d.nfile) // closing a datagram socket leaves its file
}

// Notifications returns the notifications taskd has sent to its notify socket so far
// (READY=1, STATUS=..., STOPPING=1), one line each, oldest first. After Exited is closed,
// it has all of them. None with Options.NoWait.
func (d *Daemon) Notifications() []string {
	d.nmu.Lock()
	defer d.nmu.Unlock()
	return append([]string(nil), d.notes...)
}

// PID returns the daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Exited is closed when the daemon process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// ExitErr returns how the daemon exited (nil: status 0). Valid once Exited is closed.
func (d *Daemon) ExitErr() error {
	<-d.exited
	return d.waitErr
}

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig syscall.Signal) error { return d.cmd.Process.Signal(sig) }

// Workers returns the pids of the daemon's worker processes (its children).
func (d *Daemon) Workers() []int { return procfs.Children(d.PID()) }

// Logs returns what taskd has written to its log so far (after Stop: all of it).
func (d *Daemon) Logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed {
		return d.logs
	}
	b, _ := os.ReadFile(d.Log)
	return string(b)
}

// LogTail returns the last n bytes of Logs, at most, starting at a line.
func (d *Daemon) LogTail(n int) string {
	s := strings.TrimSpace(d.Logs())
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "…\n" + s
}

// Stop stops the daemon: SIGTERM, then up to timeout for it to exit, after which it is
// killed. It then gives the processes that descended from the daemon just before the
// SIGTERM a few seconds to be gone and kills those that are left. Last it removes Dir if
// Start made it. Stop returns nil if taskd exited with status 0 in time and nothing
// outlived it; otherwise an error that says what happened and quotes the end of taskd's
// log. On a daemon that has already exited, Stop reports how it exited and cleans up.
// Later calls return the first one's result.
func (d *Daemon) Stop(timeout time.Duration) error {
	d.stopOnce.Do(func() { d.stopErr = d.stop(timeout) })
	return d.stopErr
}

func (d *Daemon) stop(timeout time.Duration) error {
	defer d.removeDir()
	var errs []error
	var kids []int
	select {
	case <-d.exited:
	default:
		kids = Descendants(d.PID())
		_ = d.Signal(syscall.SIGTERM)
		t := time.NewTimer(timeout)
		select {
		case <-d.exited:
		case <-t.C:
			_ = d.cmd.Process.Kill()
			<-d.exited
			errs = append(errs, fmt.Errorf("taskd did not exit within %v of SIGTERM, so it was killed", timeout))
		}
		t.Stop()
	}
	if len(errs) == 0 && d.waitErr != nil {
		errs = append(errs, fmt.Errorf("taskd exited with %v", d.waitErr))
	}
	if left := waitGone(kids, goneTimeout); len(left) > 0 {
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		errs = append(errs, fmt.Errorf("processes %v that taskd started outlived it by %v, so they were killed", left, goneTimeout))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("taskdproc: %w; taskd's log ends:\n%s", errors.Join(errs...), d.LogTail(logTail))
}

// removeDir removes Dir if Start made it, keeping the log for Logs.
func (d *Daemon) removeDir() {
	if !d.ownDir {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.removed {
		return
	}
	if d.Log != "" {
		b, _ := os.ReadFile(d.Log)
		d.logs = string(b)
	}
	_ = os.RemoveAll(d.Dir)
	d.removed = true
}

// Descendants returns the pids of all descendants of pid: children, their children, and
// so on.
func Descendants(pid int) []int {
	var out []int
	for _, c := range procfs.Children(pid) {
		out = append(out, c)
		out = append(out, Descendants(c)...)
	}
	return out
}

// waitGone waits until none of pids is alive, or timeout passes, and returns those alive.
func waitGone(pids []int, timeout time.Duration) []int {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(timeout)
	for {
		var left []int
		for _, p := range pids {
			if procfs.Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		pids = left
		<-tick.C
	}
}
