package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/pool"
)

// poolCollector reports every pool's state when Prometheus scrapes: nothing is counted on
// the hot path, the numbers come from pool.Stats (and the dropped stderr lines from the
// counters the workers share, Server.stderrDropped). The metrics counted as things happen
// are in instruments.go.
type poolCollector struct {
	s                                 *Server
	workers, queued, spawns           *prometheus.Desc
	spawnFailures, exits, info        *prometheus.Desc
	stderrDropped, protocol, sessions *prometheus.Desc
}

func newPoolCollector(s *Server) *poolCollector {
	iface := []string{"interface"}
	return &poolCollector{
		s: s,
		workers: prometheus.NewDesc("taskd_workers", "Worker processes by state (idle, busy, starting; live counts all started and not yet reaped).",
			[]string{"interface", "state"}, nil),
		queued:        prometheus.NewDesc("taskd_queued_checkouts", "Checkouts waiting for a worker.", iface, nil),
		spawns:        prometheus.NewDesc("taskd_worker_spawns_total", "Worker processes started.", iface, nil),
		spawnFailures: prometheus.NewDesc("taskd_worker_spawn_failures_total", "Worker processes that did not become ready.", iface, nil),
		exits: prometheus.NewDesc("taskd_worker_exits_total", "Worker processes that ended, by reason (max_checkouts, crashed, ...; see docs/config.md).",
			[]string{"interface", "reason"}, nil),
		stderrDropped: prometheus.NewDesc("taskd_worker_stderr_dropped_lines_total",
			"Lines of workers' stderr not logged, over stderr_rate.", iface, nil),
		protocol: prometheus.NewDesc("taskd_protocol_errors_total",
			"Workers killed for breaking the worker protocol (the exits of reason protocol_error).", iface, nil),
		sessions: prometheus.NewDesc("taskd_client_connections", "Client connections open.", nil, nil),
		info:     prometheus.NewDesc("taskd_build_info", "Always 1; the version label says which taskd runs.", []string{"version"}, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.workers, c.queued, c.spawns, c.spawnFailures, c.exits, c.stderrDropped,
		c.protocol, c.sessions, c.info} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, c.s.version)
	c.s.mu.Lock()
	sessions := len(c.s.sessions)
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(sessions))
	tab := c.s.tab.Load()
	for _, name := range tab.names {
		st := tab.pools[name].Stats()
		for state, n := range map[string]int{"live": st.Live, "idle": st.Idle, "busy": st.Busy, "starting": st.Starting} {
			ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(n), name, state)
		}
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(st.Queued), name)
		ch <- prometheus.MustNewConstMetric(c.spawns, prometheus.CounterValue, float64(st.Spawns), name)
		ch <- prometheus.MustNewConstMetric(c.spawnFailures, prometheus.CounterValue, float64(st.SpawnFailures), name)
		ch <- prometheus.MustNewConstMetric(c.stderrDropped, prometheus.CounterValue, float64(c.s.stderrCounter(name).Load()), name)
		for r, n := range st.Exits {
			ch <- prometheus.MustNewConstMetric(c.exits, prometheus.CounterValue, float64(n), name, pool.ExitReason(r).String())
		}
		ch <- prometheus.MustNewConstMetric(c.protocol, prometheus.CounterValue, float64(st.Exits[pool.ExitProtocolError]), name)
	}
}

// serveMetrics starts the /metrics endpoint on addr; the returned function stops it and
// waits for it.
func (s *Server) serveMetrics(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newPoolCollector(s), newWatchCollector(s), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(s.metrics.collectors()...)
	if s.tls != nil {
		reg.MustRegister(s.tls) // tls.go
	}
	reg.MustRegister(s.guard.collectors()...)
	mux := http.NewServeMux()
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	mux.Handle("/metrics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.syncLeaseCalls() // direct leases' calls so far, from the stats pages (direct.go)
		h.ServeHTTP(w, r)
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics endpoint stopped", zap.Error(err))
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
