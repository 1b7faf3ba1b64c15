package taskdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/server"
	"github.com/taskd-dev/taskd/pkg/client"
)

// Server is a running taskd daemon for tests, made by Start or New. Its methods are safe
// for concurrent use. The Server owns the daemon, the worker processes it starts, its
// temporary directory and the clients that Client and NewClient return; Close (or the
// end of the test, for Start) stops and removes them all.
type Server struct {
	addr  string // "unix:" and the socket's path
	dir   string // the temporary directory: socket and config file
	id    string // this server's id in its workers' environment (serverEnv)
	grace time.Duration
	logs  *logBuffer
	stop  context.CancelFunc
	done  chan error // the daemon's Run result, once it returns

	mu      sync.Mutex
	clients map[string]*client.Client // Client's, by interface
	made    []*client.Client          // NewClient's
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

// Start runs a taskd daemon with cfg's interfaces for the test (or benchmark) tb and
// returns once it accepts connections; workers start as the interfaces' min_idle and
// the checkouts ask. It fails the test at once (tb.Fatal) if cfg is invalid or the daemon
// cannot start, saying why.
//
// When the test ends, the daemon is stopped as Close does: the test fails if that goes
// wrong, and if the test failed, the last lines of the daemon's log (its own and its
// workers' stderr) are logged with it.
//
// In a worker process of a Go interface of cfg (see Interface.Worker) Start serves that
// interface and never returns.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	run, bench := runName(tb)
	serveIfWorker(run, cfg)
	if err := claim(tb, cfg); err != nil {
		tb.Fatal(err)
	}
	re, why := reexecFor(run, bench)
	s, err := start(cfg, re, why)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
		if tb.Failed() {
			s.logTail(tb)
		}
	})
	return s
}

// New is Start for code that has no testing.TB: TestMain, and Example functions. It
// returns once the daemon accepts connections; the caller must call Close. A Go
// interface (Interface.Worker) needs New to be called from the TestMain, Example, Test or
// Benchmark function itself (or helpers it calls on its own goroutine), which its worker
// processes run again up to this call.
//
// In a worker process of a Go interface of cfg, New serves that interface and never
// returns.
func New(cfg Config) (*Server, error) {
	run, bench := callerRun()
	serveIfWorker(run, cfg)
	re, why := (*reexec)(nil), errNoRun
	if run != "" {
		re, why = reexecFor(run, bench)
	}
	return start(cfg, re, why)
}

// live is the servers of this process that are not closed: a worker process closes
// those its test started before the Start it serves (closeLive). Guarded by liveMu.
var (
	liveMu sync.Mutex
	live   = map[*Server]struct{}{}
)

// closeLive closes the servers of this process that are not closed yet, and writes
// what went wrong to stderr (a worker process's, which taskd logs).
func closeLive() {
	liveMu.Lock()
	servers := make([]*Server, 0, len(live))
	for s := range live {
		servers = append(servers, s)
	}
	liveMu.Unlock()
	for _, s := range servers {
		if err := s.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "taskdtest: closing a server that the test started before this worker's: %v\n", err)
		}
	}
}

// maxSocketPath is the longest path of a unix socket (sun_path less its NUL, on Linux).
const maxSocketPath = 107

// start writes the config, and runs the daemon in this process until Close.
func start(cfg Config, re *reexec, why error) (s *Server, err error) {
	// Not t.TempDir: its path can exceed the 107 bytes of a unix socket path.
	dir, err := os.MkdirTemp("", "taskdtest")
	if err != nil {
		return nil, fmt.Errorf("taskdtest: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if sock := filepath.Join(dir, "taskd.sock"); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("taskdtest: the daemon's socket path %s is longer than a unix socket allows (%d bytes): set TMPDIR to a shorter directory", sock, maxSocketPath)
	}
	s = &Server{addr: "unix:" + filepath.Join(dir, "taskd.sock"), dir: dir, logs: &logBuffer{},
		id: strconv.Itoa(os.Getpid()) + "-" + filepath.Base(dir), clients: map[string]*client.Client{}, done: make(chan error, 1)}
	b := build{addr: s.addr, id: s.id, re: re, why: why, environ: os.Environ()}
	yml, err := buildYAML(cfg, b)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "taskd.yaml")
	if err := os.WriteFile(path, yml, 0o600); err != nil {
		return nil, fmt.Errorf("taskdtest: %w", err)
	}
	// No environ: the test process's TASKD_* variables do not reach a test server.
	c, err := config.Load(path, nil)
	if err != nil {
		b.redact = true
		shown, _ := buildYAML(cfg, b)
		return nil, fmt.Errorf("taskdtest: the config made of Config is invalid: %w\nthe config file:\n%s", err, numbered(shown))
	}
	s.grace = c.ShutdownGrace
	log, err := newLogger(c.Log.Level, s.logs)
	if err != nil {
		return nil, err
	}
	srv, err := server.New(*c, log, "taskdtest")
	if err != nil {
		return nil, fmt.Errorf("taskdtest: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ready := make(chan struct{})
	go func() { s.done <- srv.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
		s.stop = stop
		liveMu.Lock()
		live[s] = struct{}{}
		liveMu.Unlock()
		return s, nil
	case err := <-s.done:
		stop()
		logs, _ := s.logs.tail(failureLines)
		return nil, fmt.Errorf("taskdtest: taskd did not start: %w\n%s", err, logs)
	}
}

// newLogger is the daemon's logger: zap's console format, into the Server's log.
func newLogger(level string, w zapcore.WriteSyncer) (*zap.Logger, error) {
	l, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("taskdtest: log.level: %w", err)
	}
	ec := zap.NewDevelopmentEncoderConfig()
	ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	return zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(ec), w, l)), nil
}

// numbered returns b with line numbers, as config errors cite them.
func numbered(b []byte) string {
	var out strings.Builder
	for i, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		fmt.Fprintf(&out, "%4d  %s\n", i+1, line)
	}
	return out.String()
}

// Addr returns the daemon's address, for client.Config.Addr or $TASKD_ADDR:
// "unix:" and the path of its socket.
func (s *Server) Addr() string { return s.addr }

// Client returns the Server's client of interface iface: made on first use with the
// default client.Config (Timeout 30s, direct leases on), shared by every caller, and
// closed by Close. After Close it returns a closed client.
func (s *Server) Client(iface string) *client.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[iface]; ok {
		return c
	}
	c, err := client.New(client.Config{Addr: s.addr, Interface: iface})
	if err != nil {
		// Not reached: client.New fails only for a bad Addr or negative limits, and the
		// Addr is the Server's own.
		panic("taskdtest: " + err.Error())
	}
	s.clients[iface] = c
	if s.closed {
		c.Close()
	}
	return c
}

// NewClient returns a new client of the daemon with cfg (its Addr defaults to the
// Server's), which Close closes unless the caller has. It is for clients that need
// another config than Client's: a Timeout, MaxWorkers, DirectOff, a Logger.
func (s *Server) NewClient(cfg client.Config) (*client.Client, error) {
	if cfg.Addr == "" {
		cfg.Addr = s.addr
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.made = append(s.made, c)
	if s.closed {
		c.Close()
	}
	return c, nil
}

// Logs returns the daemon's recent log (up to 2000 lines), its workers' stderr lines
// included, in zap's console format.
func (s *Server) Logs() string {
	out, _ := s.logs.tail(0)
	return out
}

func (s *Server) logTail(tb testing.TB) {
	tb.Helper()
	out, before := s.logs.tail(failureLines)
	if out == "" {
		tb.Log("taskdtest: taskd's log is empty")
		return
	}
	tb.Logf("taskdtest: taskd's log (%s), %d earlier lines left out:\n%s", s.addr, before, out)
}

// Close closes the Server's clients, stops the daemon (as SIGTERM would: held checkouts
// get shutdown_grace to end, then the workers are stopped), checks that none of its worker
// processes (or processes they started) is left, killing any that is, and removes its
// temporary directory. It returns what went wrong; calling it again returns the same.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	liveMu.Lock()
	delete(live, s)
	liveMu.Unlock()
	s.mu.Lock()
	s.closed = true
	clients := s.made
	for _, c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	for _, c := range clients {
		c.Close()
	}
	var errs []error
	s.stop()
	wait := s.grace + 30*time.Second
	select {
	case err := <-s.done:
		if err != nil {
			errs = append(errs, fmt.Errorf("taskdtest: taskd: %w", err))
		}
	case <-time.After(wait):
		errs = append(errs, fmt.Errorf("taskdtest: taskd did not stop within %v of Close (shutdown_grace %v)", wait, s.grace))
	}
	if left := s.leftovers(); len(left) > 0 {
		errs = append(errs, fmt.Errorf("taskdtest: worker processes outlived taskd (killed now): %s", strings.Join(left, "; ")))
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("taskdtest: removing the server's directory: %w", err))
	}
	return errors.Join(errs...)
}

// leftovers finds the live processes that carry this server's id in their environment
// (its workers and what they started, wherever they were reparented), allowing a
// moment for ones already killed to die, kills them and describes them.
func (s *Server) leftovers() []string {
	deadline := time.Now().Add(2 * time.Second)
	for {
		pids := s.marked()
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var out []string
			for _, pid := range pids {
				cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))))
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// marked returns the live processes whose environment has serverEnv=s.id.
func (s *Server) marked() []int {
	ents, _ := os.ReadDir("/proc")
	want := []byte(serverEnv + "=" + s.id)
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil { // another user's, or gone
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, want) && procfs.Alive(pid) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
