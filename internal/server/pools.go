package server

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/worker"
)

// From an interface's config to its pool and its workers: what each reload or start
// applies to an interface (Server.spawner, Server.poolConfig).

// spawner returns the function that starts a worker of interface name as ic says. It is
// called whenever ic is applied (start, reload), so it also applies ic's metrics settings.
func (s *Server) spawner(name string, ic config.Interface) pool.Spawner {
	log := s.log.Named("worker")
	maxBytes := int(s.cfg.MaxMessageBytes)
	stderr, dropped := stderrLimit(ic), s.stderrCounter(name)
	im := s.metrics.iface(name)
	im.setMaxMethods(ic.MetricsMaxMethods)
	book := s.logBook
	ident, box, isoErr := isolation(ic) // user, group, umask, rlimits: isolation.go
	ci := s.interfaceCgroup(name, ic)
	return func(ctx context.Context, id string, onExit func(*worker.Worker)) (*worker.Worker, error) {
		if isoErr != nil {
			return nil, &worker.StartError{Interface: name, ID: id, Reason: isoErr.Error(), Err: isoErr}
		}
		onLine := func(pid int, at time.Time, line string) { book.add(name, id, pid, at, line) }
		start := time.Now()
		w, err := startWorker(ctx, ci, worker.Config{
			Interface: name, ID: id, Command: ic.Command, Dir: ic.Dir, Env: ic.Env,
			SetupTimeout: ic.SetupTimeout, CallTimeout: ic.CallTimeout, CancelGrace: ic.Grace(),
			MaxMessageBytes: maxBytes, Logger: log, OnExit: onExit,
			Stderr: stderr, StderrDropped: dropped, StderrLine: onLine,
			Identity: ident, Sandbox: box, Direct: ic.DirectOn(),
		})
		if err == nil {
			im.observeSpawn(time.Since(start))
		}
		return w, err
	}
}

// stderrLimit returns the limits of ic's stderr_line_max, stderr_rate and stderr_burst.
func stderrLimit(ic config.Interface) worker.StderrLimit {
	l := worker.StderrLimit{LineMax: int(config.DefaultStderrLineMax), Rate: config.DefaultStderrRate, Burst: ic.StderrBurst}
	if ic.StderrLineMax != nil {
		l.LineMax = int(*ic.StderrLineMax)
	}
	if ic.StderrRate != nil {
		l.Rate = *ic.StderrRate
	}
	return l
}

// stderrCounter returns the counter of interface name's dropped stderr lines.
func (s *Server) stderrCounter(name string) *atomic.Uint64 {
	c, _ := s.stderrDropped.LoadOrStore(name, new(atomic.Uint64))
	return c.(*atomic.Uint64)
}

// poolConfig returns the pool settings of interface name from ic.
func (s *Server) poolConfig(name string, ic config.Interface) pool.Config {
	minIdle := 0
	if ic.MinIdle != nil {
		minIdle = *ic.MinIdle
	}
	jitter := config.DefaultRecycleJitter
	if ic.RecycleJitter != nil {
		jitter = *ic.RecycleJitter
	}
	return pool.Config{
		Name: name, MinIdle: minIdle, MaxWorkers: ic.MaxWorkers, MaxQueue: ic.MaxQueue,
		MaxCheckouts: ic.MaxCheckouts, IdleTimeout: ic.IdleTimeout, CallTimeout: ic.CallTimeout, CancelGrace: ic.Grace(),
		Logger: s.log.Named("pool"), MaxAge: ic.MaxAge, MaxRSS: int64(ic.MaxRSS), RecycleJitter: float64(jitter),
		Stderr: stderrLimit(ic),
	}
}
