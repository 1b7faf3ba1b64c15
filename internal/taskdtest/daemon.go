package taskdtest

import (
	"bytes"
	"context"
	"fmt"
	"github.com/taskd-dev/taskd/internal/procfs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// RepoRoot returns the repository root (where go.mod is).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary returns the path of a taskd (or other cmd/examples) binary built from this
// checkout once per test process. name is a main package path relative to the repository
// root, e.g. "cmd/taskd" or "examples/echo".
func Binary(t testing.TB, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "taskdtest-bin")
	})
	if buildErr != nil {
		t.Fatalf("taskdtest: %v", buildErr)
	}
	out := filepath.Join(buildDir, strings.ReplaceAll(name, "/", "_"))
	binMu.Lock()
	defer binMu.Unlock()
	if _, ok := built[name]; ok {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, "./"+name)
	cmd.Dir = RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("taskdtest: go build ./%s: %v\n%s", name, err, b)
	}
	built[name] = struct{}{}
	return out
}

var (
	binMu sync.Mutex
	built = map[string]struct{}{}
)

// Daemon is a running taskd process.
type Daemon struct {
	t       testing.TB
	Dir     string // temporary directory holding the config and the socket
	Addr    string // "unix:/.../taskd.sock"
	Socket  string // the socket path
	Config  string // the config file path
	Cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	waitErr error
	stopped bool
}

// Options adjust Start.
type Options struct {
	Env  []string // extra environment for the daemon (e.g. TASKD_LOG_LEVEL=debug)
	Dir  string   // reuse this directory (and so this socket path) instead of a new one
	Wait bool     // wait for READY=1 (default true when Start is used)
}

// Start runs taskd with the given YAML interfaces section and top-level settings and waits
// until it is ready. yaml is the whole config except `listen`, which Start adds.
func Start(t testing.TB, yaml string) *Daemon {
	t.Helper()
	return StartWith(t, yaml, Options{Wait: true})
}

// StartWith is Start with options.
func StartWith(t testing.TB, yaml string, o Options) *Daemon {
	t.Helper()
	bin := Binary(t, "cmd/taskd")
	dir := o.Dir
	if dir == "" {
		var err error
		// Short path: unix socket paths are limited to 108 bytes.
		dir, err = os.MkdirTemp("", "taskd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	d := &Daemon{t: t, Dir: dir, Socket: filepath.Join(dir, "taskd.sock"), Config: filepath.Join(dir, "taskd.yaml"),
		logs: &syncBuffer{}, exited: make(chan struct{})}
	d.Addr = "unix:" + d.Socket
	full := fmt.Sprintf("listen: [%q]\nlog: {level: debug, format: json}\n%s", d.Addr, yaml)
	if err := os.WriteFile(d.Config, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	notify := filepath.Join(dir, "notify.sock")
	os.Remove(notify)
	nconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer nconn.Close()

	d.Cmd = exec.Command(bin, "-c", d.Config)
	d.Cmd.Dir = RepoRoot()
	d.Cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	d.Cmd.Env = append(d.Cmd.Env, o.Env...)
	d.Cmd.Stdout = d.logs
	d.Cmd.Stderr = d.logs
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.waitErr = d.Cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(d.cleanup)
	if !o.Wait {
		return d
	}
	ready := notified(nconn)
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("taskd did not report READY=1: %v\nlogs:\n%s", err, d.Logs())
		}
	case <-d.exited:
		t.Fatalf("taskd exited before it was ready: %v\nlogs:\n%s", d.waitErr, d.Logs())
	}
	return d
}

// Logs returns everything the daemon has written so far (JSON log lines).
func (d *Daemon) Logs() string { return d.logs.String() }

// PID returns the daemon's process id.
func (d *Daemon) PID() int { return d.Cmd.Process.Pid }

// Exited is closed when the daemon process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// ExitErr returns the daemon's exit error (valid after Exited is closed).
func (d *Daemon) ExitErr() error { return d.waitErr }

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig syscall.Signal) {
	_ = d.Cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits (up to timeout) for the daemon to exit; it returns the exit
// error. Afterwards it checks that no worker process the daemon started is left.
func (d *Daemon) Stop(timeout time.Duration) error {
	d.t.Helper()
	kids := Descendants(d.PID())
	d.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(timeout):
		d.Signal(syscall.SIGKILL)
		<-d.exited
		d.t.Errorf("taskd did not exit within %s of SIGTERM\nlogs:\n%s", timeout, d.Logs())
	}
	d.stopped = true
	RequireGone(d.t, kids, 5*time.Second)
	return d.waitErr
}

func (d *Daemon) cleanup() {
	if d.stopped {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	if err := d.Stop(30 * time.Second); err != nil {
		d.t.Errorf("taskd exited with %v\nlogs:\n%s", err, d.Logs())
	}
}

// Children returns the pids of the direct children of pid.
func Children(pid int) []int { return procfs.Children(pid) }

// Descendants returns the pids of all descendants of pid.
func Descendants(pid int) []int {
	var out []int
	for _, c := range Children(pid) {
		out = append(out, c)
		out = append(out, Descendants(c)...)
	}
	return out
}

// FDCount returns the number of open file descriptors of pid.
func FDCount(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Alive reports whether process pid exists and has not exited (see procfs.Alive).
func Alive(pid int) bool { return procfs.Alive(pid) }

// RequireGone fails the test if any of pids is still alive after timeout.
func RequireGone(t testing.TB, pids []int, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		var left []int
		for _, p := range pids {
			if Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			for _, p := range left {
				syscall.Kill(p, syscall.SIGKILL)
			}
			t.Errorf("worker processes outlived taskd: %v", left)
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// notified reports on the returned channel when READY=1 arrives on the notify socket (as
// systemd would see it): nil, or the error that ended the wait (30s at most).
func notified(nconn *net.UnixConn) <-chan error {
	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			_ = nconn.SetReadDeadline(time.Now().Add(30 * time.Second))
			n, _, err := nconn.ReadFromUnix(buf)
			if err != nil {
				ready <- err
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- nil
				return
			}
		}
	}()
	return ready
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
