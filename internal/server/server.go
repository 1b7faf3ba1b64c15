package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/wire"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Server is one taskd daemon. Create it with New and run it with Run (once).
type Server struct {
	cfg     config.Config
	log     *zap.Logger
	version string
	started time.Time
	pools   map[string]*pool.Pool
	names   []string   // interface names, sorted
	inherit []*os.File // sockets passed by systemd (Inherit), until Run takes them

	mu        sync.Mutex
	listeners []net.Listener
	sessions  map[*session]struct{}
	draining  bool
	nextSess  uint64
	wg        sync.WaitGroup // accept loops and sessions

	nextCo atomic.Uint64 // last checkout id given (see newCo); not guarded by mu
}

// New checks cfg (it must have been normalized) and returns a server that has not started
// anything yet.
func New(cfg config.Config, log *zap.Logger, version string) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{cfg: cfg, log: log, version: version, sessions: make(map[*session]struct{})}
	for name := range cfg.Interfaces {
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	return s, nil
}

// Run listens, starts the pools, calls ready (if not nil) once every listener accepts,
// and serves until ctx is cancelled; then it drains and stops everything and returns nil.
// A listener that cannot be opened is an error returned before ready.
func (s *Server) Run(ctx context.Context, ready func()) error {
	s.started = time.Now()
	lns, err := s.listen()
	if err != nil {
		return err
	}
	s.pools = make(map[string]*pool.Pool, len(s.names))
	for _, name := range s.names {
		s.pools[name] = s.newPool(name, s.cfg.Interfaces[name])
	}
	stopMetrics := func() {}
	if addr := s.cfg.MetricsListen; addr != "" {
		stop, err := s.serveMetrics(addr)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			for _, p := range s.pools {
				p.Close()
			}
			return fmt.Errorf("metrics_listen %s: %w", addr, err)
		}
		stopMetrics = stop
	}
	s.mu.Lock()
	s.listeners = lns
	for _, ln := range lns {
		s.wg.Add(1)
		go s.accept(ln)
	}
	s.mu.Unlock()
	addrs := make([]string, len(lns))
	for i, ln := range lns {
		addrs[i] = ln.Addr().String()
	}
	s.log.Info("taskd ready", zap.String("version", s.version), zap.Strings("listen", addrs),
		zap.Strings("interfaces", s.names))
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	s.shutdown()
	stopMetrics()
	return nil
}

func (s *Server) newPool(name string, ic config.Interface) *pool.Pool {
	log := s.log.Named("worker")
	maxBytes := int(s.cfg.MaxMessageBytes)
	spawn := func(ctx context.Context, id string, onExit func(*worker.Worker)) (*worker.Worker, error) {
		return worker.Start(ctx, worker.Config{
			Interface: name, ID: id, Command: ic.Command, Dir: ic.Dir, Env: ic.Env,
			SetupTimeout: ic.SetupTimeout, CallTimeout: ic.CallTimeout,
			MaxMessageBytes: maxBytes, Logger: log, OnExit: onExit,
		})
	}
	minIdle := 0
	if ic.MinIdle != nil {
		minIdle = *ic.MinIdle
	}
	jitter := config.DefaultRecycleJitter
	if ic.RecycleJitter != nil {
		jitter = *ic.RecycleJitter
	}
	return pool.New(pool.Config{
		Name: name, MinIdle: minIdle, MaxWorkers: ic.MaxWorkers, MaxQueue: ic.MaxQueue,
		MaxCheckouts: ic.MaxCheckouts, IdleTimeout: ic.IdleTimeout, Logger: s.log.Named("pool"),
		MaxAge: ic.MaxAge, MaxRSS: int64(ic.MaxRSS), RecycleJitter: float64(jitter),
	}, spawn)
}

// listen opens a listener for each address of `listen`, or takes the socket systemd passed
// for it (Inherit), and adds the sockets systemd passed that no address took.
func (s *Server) listen() ([]net.Listener, error) {
	ins, err := s.takeInherited()
	if err != nil {
		return nil, err
	}
	var lns []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, ln := range lns {
			ln.Close()
		}
		for _, in := range ins {
			if !in.used {
				in.ln.Close()
			}
		}
		return nil, err
	}
	for _, a := range s.cfg.Listen {
		addr, err := wire.ParseAddr(a)
		if err != nil {
			return fail(fmt.Errorf("listen: %w", err))
		}
		if ln := takeFor(ins, addr); ln != nil {
			// systemd's socket: not replaced, not chmodded (the socket unit's SocketMode=
			// applies), not unlinked on shutdown.
			s.log.Info("using the socket passed by systemd", zap.String("listen", a))
			lns = append(lns, ln)
			continue
		}
		var ln net.Listener
		if addr.Network == "unix" {
			ln, err = s.listenUnix(addr.Address)
		} else {
			if !addr.IsLoopback() {
				return fail(fmt.Errorf("listen %s: TCP without TLS is only allowed on loopback addresses (127.0.0.1, ::1, localhost); TLS is not supported yet", a))
			}
			ln, err = net.Listen("tcp", addr.Address)
		}
		if err != nil {
			return fail(fmt.Errorf("listen %s: %w", a, err))
		}
		lns = append(lns, ln)
	}
	extra, err := s.extraInherited(ins)
	if err != nil {
		return fail(err)
	}
	return append(lns, extra...), nil
}

// listenUnix replaces a stale socket file left by a dead daemon, and refuses to start if a
// live daemon answers on it.
func (s *Server) listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; remove it or choose another listen path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("another taskd is already listening on %s; stop it first or choose another listen path", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
		s.log.Info("replaced stale socket", zap.String("path", path))
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	mode, err := strconv.ParseUint(s.cfg.SocketMode, 8, 32)
	if err != nil {
		mode = 0o660
	}
	if err := os.Chmod(path, os.FileMode(mode)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket_mode: %w", err)
	}
	return ln, nil
}

func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: keep serving once it passes, as
			// net/http does, instead of silently taking no more connections.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed; retrying", zap.Error(err), zap.Duration("in", delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.serveConn(conn) {
			conn.Close()
		}
	}
}

// serveConn starts a session on conn, owned by the server (Server.wg), and reports
// whether it did: a draining server serves no new connection, and the caller closes it.
// Every connection goes through here: the accepted ones, and the health check's own.
func (s *Server) serveConn(conn net.Conn) bool {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return false
	}
	s.nextSess++
	sess := newSession(s, conn, s.nextSess)
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		sess.serve()
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
	}()
	return true
}

func (s *Server) shutdown() {
	grace := s.cfg.ShutdownGrace
	s.log.Info("shutting down", zap.Duration("shutdown_grace", grace))
	s.mu.Lock()
	s.draining = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	for _, p := range s.pools {
		p.Drain()
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	for _, p := range s.pools {
		if p.WaitIdle(ctx) != nil {
			break // shutdown_grace is over
		}
	}
	cancel()
	if n := s.busy(); n > 0 {
		s.log.Warn("shutdown_grace over; stopping workers of checkouts still held", zap.Int("checkouts", n))
	}
	var wg sync.WaitGroup
	for _, p := range s.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Close()
		}()
	}
	wg.Wait()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.log.Info("taskd stopped")
}

func (s *Server) busy() int {
	n := 0
	for _, p := range s.pools {
		n += p.Busy()
	}
	return n
}

// newCo returns a checkout id, unique for the daemon's lifetime. It takes no lock: it is
// called under a session's lock on every checkout.
func (s *Server) newCo() uint64 { return s.nextCo.Add(1) }

// status builds the answer to a "status" request: the one place where the pools' stats
// (which carry each worker's own snapshot as it is) become the client protocol's status.
func (s *Server) status() *wire.Status {
	st := &wire.Status{Version: s.version, PID: os.Getpid(), UptimeSec: time.Since(s.started).Seconds()}
	s.mu.Lock()
	st.Draining = s.draining
	s.mu.Unlock()
	now := time.Now()
	for _, name := range s.names {
		ps := s.pools[name].Stats()
		is := wire.InterfaceStatus{Name: name, Live: ps.Live, Idle: ps.Idle, Busy: ps.Busy,
			Starting: ps.Starting, Queued: ps.Queued, MinIdle: ps.MinIdle, MaxWorkers: ps.MaxWorkers,
			Checkouts: ps.Checkouts, Spawns: ps.Spawns, SpawnFailures: ps.SpawnFailures,
			LastError: ps.LastError, Retiring: ps.Retiring, Workers: make([]wire.WorkerStatus, 0, len(ps.Workers))}
		for r, n := range ps.Exits {
			if n > 0 {
				if is.Exits == nil {
					is.Exits = make(map[string]uint64)
				}
				is.Exits[pool.ExitReason(r).String()] = n
			}
		}
		for _, w := range ps.Workers {
			ws := wire.WorkerStatus{ID: w.ID, PID: w.PID, State: w.State, Checkouts: w.Checkouts,
				AgeSec: now.Sub(w.Started).Seconds(), Method: w.Method}
			if !w.CallStarted.IsZero() {
				ws.CallSec = now.Sub(w.CallStarted).Seconds()
			}
			is.Workers = append(is.Workers, ws)
		}
		st.Interfaces = append(st.Interfaces, is)
	}
	return st
}

// Summary returns a one-line summary of the daemon for systemd's STATUS= (what
// `systemctl status` shows): interfaces, live workers, checkouts held and waiting. It is
// safe for concurrent use once Run has called ready, and cheap enough to call every few
// seconds.
func (s *Server) Summary() string {
	var live, idle, held, queued int
	for _, name := range s.names {
		ps := s.pools[name].Stats()
		live, idle, held, queued = live+ps.Live, idle+ps.Idle, held+ps.Busy, queued+ps.Queued
	}
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	state := "serving"
	if draining {
		state = "draining"
	}
	return fmt.Sprintf("%s: interfaces %d, workers %d (%d idle), checkouts %d held, %d waiting",
		state, len(s.names), live, idle, held, queued)
}
