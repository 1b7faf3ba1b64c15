package taskdtest

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/taskdproc"
)

// RepoRoot returns the repository root (where go.mod is).
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Binary returns the path of a taskd (or other cmd/examples) binary built from this
// checkout once per test process, into the scratch directory that Main removes. name is a
// main package path relative to the repository root, e.g. "cmd/taskd" or "examples/echo".
func Binary(t testing.TB, name string) string {
	t.Helper()
	bin, err := BuildForMain(name)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Daemon is a running taskd process (see taskdproc.Daemon for its fields and methods),
// stopped when the test ends. Stop, Signal and the rest are safe for concurrent use.
type Daemon struct {
	*taskdproc.Daemon
}

// Options adjust StartWith.
type Options struct {
	Env  []string // extra environment for the daemon (e.g. TASKD_LOG_LEVEL=debug)
	Dir  string   // reuse this directory (and so this socket path) instead of a new one
	Wait bool     // wait for READY=1 (default true when Start is used)
	Bin  string   // the taskd binary; default: cmd/taskd built from this checkout (BuildTagged builds others)

	// Sockets are handed to taskd as systemd's socket activation does (see
	// taskdproc.Options.Sockets and ListeningSocket); they stay the caller's.
	Sockets []*os.File

	// Cgroup, if set, is a cgroup v2 directory taskd is started in (see
	// taskdproc.Options.Cgroup and CgroupForTest); it stays the caller's.
	Cgroup *os.File
}

// Start runs taskd with the given YAML interfaces section and top-level settings and waits
// until it is ready. yaml is the whole config except `listen`, which Start adds.
func Start(t testing.TB, yaml string) *Daemon {
	t.Helper()
	return StartWith(t, yaml, Options{Wait: true})
}

// StartWith is Start with options. When the test ends, the daemon is stopped (a test
// failure if it does not exit cleanly within 30s of SIGTERM or a worker outlives it) unless
// it has exited already, and its directory is removed unless o.Dir gave it.
func StartWith(t testing.TB, yaml string, o Options) *Daemon {
	t.Helper()
	p, err := start(yaml, o)
	if err != nil {
		t.Fatal(err)
	}
	if o.Dir == "" {
		t.Cleanup(func() { os.RemoveAll(p.Dir) }) // after the Stop below: cleanups run last-in first-out
	}
	t.Cleanup(func() {
		select {
		case <-p.Exited(): // stopped, killed or crashed: the test has seen to it
		default:
			if err := p.Stop(30 * time.Second); err != nil {
				t.Error(err)
			}
		}
	})
	return &Daemon{p}
}

// ListeningSocket returns a listening unix socket bound to path, as a systemd socket unit
// holds one, for Options.Sockets; name is its LISTEN_FDNAMES name. The socket file gets
// mode 0600. When the test ends, the socket is closed and its file removed.
func ListeningSocket(t testing.TB, path, name string) *os.File {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), name)
	t.Cleanup(func() {
		f.Close()
		os.Remove(path)
	})
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatalf("binding %s: %v", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	return f
}

// Children returns the pids of the direct children of pid.
func Children(pid int) []int { return procfs.Children(pid) }

// Descendants returns the pids of all descendants of pid.
func Descendants(pid int) []int { return taskdproc.Descendants(pid) }

// FDCount returns the number of open file descriptors of pid.
func FDCount(t testing.TB, pid int) int {
	t.Helper()
	n, err := procfs.OpenFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	return n
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
