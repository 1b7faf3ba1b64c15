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
	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/procfs"
	"github.com/taskd-dev/taskd/internal/wire"
)

// Server is one taskd daemon. Create it with New and run it with Run (once).
type Server struct {
	cfg     config.Config // as started: the keys a reload cannot change come from here
	log     *zap.Logger
	version string
	started time.Time
	inherit []*os.File // sockets passed by systemd (Inherit), until Run takes them
	reload  Reloading  // set by SetReloading before Run

	// tab is the interfaces being served: replaced whole by a reload, read without a lock
	// (a checkout request loads it once).
	tab atomic.Pointer[table]

	// reloadMu serializes reloads; applied is guarded by it.
	reloadMu sync.Mutex
	applied  config.Config // what the last reload applied (as started, before the first)
	steer    steering      // what admin requests changed until the next reload (admin.go)
	grace    atomic.Int64  // shutdown_grace as last applied (a time.Duration)

	// halt is cancelled when the shutdown begins: background work of the server's own
	// (finishRemoved) gives up and leaves the rest to the shutdown.
	halt    context.Context
	haltNow context.CancelFunc

	mu        sync.Mutex
	listeners []net.Listener
	sessions  map[*session]struct{}
	removing  map[*pool.Pool]string // pools of removed interfaces, until their checkouts end
	draining  bool
	nextSess  uint64
	// stopping is draining, readable without mu: sessions say it on granted and pong
	// (wire.ClientMsg.Draining).
	stopping atomic.Bool
	wg       sync.WaitGroup // accept loops, sessions and removed pools

	nextCo atomic.Uint64 // last checkout id given (see newCo); not guarded by mu
	// warmHeld counts the warm leases held (warm.go); not guarded by mu.
	warmHeld atomic.Int64

	// stderrDropped counts, per interface name, the stderr lines its workers dropped over
	// stderr_rate (worker.Config.StderrDropped), for the metrics; kept across reloads.
	stderrDropped sync.Map // string → *atomic.Uint64

	// metrics are the instruments recorded as things happen (see instruments.go), kept
	// across reloads; recorded whether or not metrics_listen serves them.
	metrics *metrics

	// logBook keeps the recent stderr lines of each interface's workers for logs
	// requests (logring.go); kept across reloads.
	logBook *logBook

	// watches is each interface's checkout_warn_after and slow_call, and their counts
	// (holders.go); kept across reloads.
	watches sync.Map // string → *watch

	// lines is max_line_memory: the memory that all client connections' lines longer
	// than wire.ReadBufferSize share (see session.readLoop).
	lines *wire.Budget

	// tls serves the tls:// listeners (tls.go); nil when the tls key has no certificate.
	tls *tlsServing
	cg  cgroups // the workers' cgroups (cgroups.go); set up by Run before the pools start
	// guard is who may call what, and the limits on client connections (access.go).
	guard   *guard
	clients int // accepted connections being served, for max_clients; guarded by mu
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
	s := &Server{cfg: cfg, applied: cfg, log: log, version: version, sessions: make(map[*session]struct{}),
		removing: make(map[*pool.Pool]string), lines: wire.NewBudget(int64(cfg.MaxLineMemory)),
		metrics: newMetrics(), logBook: newLogBook(), guard: newGuard()}
	s.setAccess(cfg)
	s.grace.Store(int64(cfg.ShutdownGrace))
	s.halt, s.haltNow = context.WithCancel(context.Background())
	var err error
	if s.tls, err = serveTLS(cfg.TLS, log); err != nil {
		return nil, err
	}
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
	s.setupCgroups()
	defer s.closeCgroups() // once the pools are closed
	tab := &table{pools: make(map[string]*pool.Pool, len(s.cfg.Interfaces))}
	for name, ic := range s.cfg.Interfaces {
		tab.pools[name] = pool.New(s.poolConfig(name, ic), s.spawner(name, ic))
		tab.names = append(tab.names, name)
	}
	sort.Strings(tab.names)
	s.tab.Store(tab)
	s.setWatches(s.cfg.Interfaces)
	stopMetrics := func() {}
	if addr := s.cfg.MetricsListen; addr != "" {
		stop, err := s.serveMetrics(addr)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			for _, p := range tab.pools {
				p.Close()
			}
			return fmt.Errorf("metrics_listen %s: %w", addr, err)
		}
		stopMetrics = stop
	}
	s.mu.Lock()
	s.listeners = lns
	s.wg.Add(1)
	go s.watchHeld()
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
		zap.Strings("interfaces", tab.names))
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	s.shutdown()
	stopMetrics()
	return nil
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
			lns = append(lns, s.secure(ln, addr))
			continue
		}
		var ln net.Listener
		if addr.Network == "unix" {
			ln, err = s.listenUnix(addr.Address)
		} else {
			ln, err = s.listenTCP(addr) // tls.go
		}
		if err != nil {
			return fail(fmt.Errorf("listen %s: %w", a, err))
		}
		lns = append(lns, s.secure(ln, addr))
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
	defer crash.OnPanic(s.log, "accept")
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
		s.serveAccepted(ln, conn) // tls.go
	}
}

// serveConn starts a session on conn, owned by the server (Server.wg), and reports
// whether it did: a draining server serves no new connection, and the caller closes it.
// Every connection goes through here: the accepted ones (client: counted against
// max_clients, refused past it, and held to hello_timeout), and the health check's own.
func (s *Server) serveConn(conn net.Conn, client bool) bool {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		return false
	}
	if client && int64(s.clients) >= s.guard.maxClients.Load() {
		open := s.clients
		s.mu.Unlock()
		s.refuseClient(conn, open) // closes conn
		return true
	}
	s.nextSess++
	sess := newSession(s, conn, s.nextSess)
	sess.client = client
	s.sessions[sess] = struct{}{}
	if client {
		s.clients++
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer crash.OnPanic(sess.log, "session")
		sess.serve()
		s.mu.Lock()
		delete(s.sessions, sess)
		if client {
			s.clients--
		}
		s.mu.Unlock()
	}()
	return true
}

func (s *Server) shutdown() {
	s.mu.Lock()
	s.draining = true // from here on, a reload changes nothing
	s.stopping.Store(true)
	s.haltNow()
	for _, ln := range s.listeners {
		ln.Close()
	}
	pools := s.allPoolsLocked()
	grace := s.shutdownGrace()
	s.mu.Unlock()
	s.log.Info("shutting down", zap.Duration("shutdown_grace", grace))
	for _, p := range pools {
		p.Drain(nil)
	}
	s.reclaimAllWarm("taskd is shutting down") // the sweep that would has stopped
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	for _, p := range pools {
		if p.WaitIdle(ctx) != nil {
			break // shutdown_grace is over
		}
	}
	cancel()
	if n := busy(pools); n > 0 {
		s.log.Warn("shutdown_grace over; stopping workers of checkouts still held", zap.Int("checkouts", n))
	}
	var wg sync.WaitGroup
	for _, p := range pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Close()
		}()
	}
	wg.Wait()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.closeWithin(shutdownFlushWait)
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.log.Info("taskd stopped")
}

// allPoolsLocked returns every pool: the interfaces served, and the removed ones still
// finishing their checkouts. s.mu is held.
func (s *Server) allPoolsLocked() []*pool.Pool {
	tab := s.tab.Load()
	pools := make([]*pool.Pool, 0, len(tab.pools)+len(s.removing))
	for _, name := range tab.names {
		pools = append(pools, tab.pools[name])
	}
	for p := range s.removing {
		pools = append(pools, p)
	}
	return pools
}

func busy(pools []*pool.Pool) int {
	n := 0
	for _, p := range pools {
		n += p.Busy()
	}
	return n
}

// newCo returns a checkout id, unique for the daemon's lifetime. It takes no lock: it is
// called under a session's lock on every checkout.
func (s *Server) newCo() uint64 { return s.nextCo.Add(1) }

// status builds the answer to a "status" request: the one place where the pools' stats
// (which carry each worker's own snapshot as it is) become the client protocol's status.
// Interfaces that a reload removed are listed, marked, until their last checkout ends.
func (s *Server) status() *wire.Status {
	st := &wire.Status{Version: s.version, PID: os.Getpid(), UptimeSec: time.Since(s.started).Seconds()}
	tab := s.tab.Load()
	s.mu.Lock()
	st.Draining = s.draining
	type named struct {
		name    string
		p       *pool.Pool
		removed bool
	}
	list := make([]named, 0, len(tab.names)+len(s.removing))
	for _, name := range tab.names {
		list = append(list, named{name, tab.pools[name], false})
	}
	for p, name := range s.removing {
		list = append(list, named{name, p, true})
	}
	s.mu.Unlock()
	sort.SliceStable(list, func(i, j int) bool { return list[i].name < list[j].name })
	now := time.Now()
	for _, x := range list {
		ps := x.p.Stats()
		is := wire.InterfaceStatus{Name: x.name, Live: ps.Live, Idle: ps.Idle, Busy: ps.Busy,
			Starting: ps.Starting, Queued: ps.Queued, MinIdle: ps.MinIdle, MaxWorkers: ps.MaxWorkers,
			Checkouts: ps.Checkouts, Calls: ps.Calls, Spawns: ps.Spawns, SpawnFailures: ps.SpawnFailures,
			LastError: ps.LastError, Retiring: ps.Retiring, Generation: ps.Generation, Removed: x.removed,
			Workers: make([]wire.WorkerStatus, 0, len(ps.Workers)), Allow: s.allowOf(x.name)}
		is.Draining = ps.Paused // drained by an admin request (admin.go)
		is.HeldTooLong, is.SlowCalls = s.watchCounts(x.name)
		is.CallLatency = s.metrics.iface(x.name).callLatency()
		for r, n := range ps.Exits {
			if n > 0 {
				if is.Exits == nil {
					is.Exits = make(map[string]uint64)
				}
				is.Exits[pool.ExitReason(r).String()] = n
			}
		}
		for _, w := range ps.Workers {
			ws := wire.WorkerStatus{ID: w.ID, PID: w.PID, State: w.State, Gen: w.Gen, Checkouts: w.Checkouts,
				AgeSec: now.Sub(w.Started).Seconds(), Method: w.Method}
			if !w.CallStarted.IsZero() {
				ws.CallSec = now.Sub(w.CallStarted).Seconds()
			}
			if rss, err := procfs.RSS(w.PID); err == nil { // here only: a status request
				ws.RSS = rss
			}
			is.Workers = append(is.Workers, ws)
		}
		st.Interfaces = append(st.Interfaces, is)
	}
	return st
}
