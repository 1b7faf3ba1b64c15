package server

import (
	"context"
	"errors"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/cgroup"
	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Worker cgroups (internal/cgroup): when taskd runs with a delegated cgroup v2, each
// worker is spawned straight into a cgroup of its own under <own>/workers/<interface>/,
// with the interface's cgroup limits, and when it has been reaped its cgroup is killed
// whole and removed. Without one, workers run as before and the limits do not apply.

// cgroups is the server's part in worker cgroups.
type cgroups struct {
	tree   *cgroup.Tree // nil when taskd runs without a delegated cgroup
	off    string       // why, when tree is nil
	warned sync.Map     // interface name → the config.Cgroup last applied (interfaceCgroup)
}

// setupCgroups finds taskd's delegated cgroup and lays out the workers' tree in it
// (s.cg.tree), or logs, once, why cgroup limits are off. Run calls it before it starts
// the pools.
func (s *Server) setupCgroups() {
	log := s.log.Named("cgroup")
	f, err := cgroup.Detect()
	if err == nil {
		s.cg.tree, err = cgroup.Setup(f, log)
		if err != nil {
			err = &cgroup.OffError{Reason: "setting up " + f.Dir + ": " + err.Error()}
		}
	}
	if err != nil {
		s.cg.off = err.Error()
		var off *cgroup.OffError
		if errors.As(err, &off) {
			s.cg.off = off.Reason
		}
		log.Info("cgroup limits are off: " + s.cg.off + "; workers run in taskd's own cgroup, without limits of their own")
		return
	}
	log.Info("cgroups on: each worker runs in a cgroup of its own, killed whole when the worker ends",
		zap.String("cgroup", s.cg.tree.Dir()), zap.Strings("controllers", s.cg.tree.Enabled()))
}

// closeCgroups removes the workers' cgroups, once the pools are closed.
func (s *Server) closeCgroups() {
	if s.cg.tree == nil {
		return
	}
	if err := s.cg.tree.Close(); err != nil {
		s.log.Named("cgroup").Warn("worker cgroups not all removed", zap.Error(err))
	}
}

// interfaceCgroup returns the cgroup of interface name with ic's limits applied (live:
// the running workers' cgroups get them too), or nil when taskd runs without cgroups.
// It warns when ic sets limits that will not apply. spawner calls it each time ic is
// applied (start, reload).
func (s *Server) interfaceCgroup(name string, ic config.Interface) *cgroup.Interface {
	l := cgroup.Limits{MemoryMax: int64(ic.Cgroup.MemoryMax), PidsMax: int64(ic.Cgroup.PidsMax), CPUWeight: ic.Cgroup.CPUWeight}
	log := s.log.Named("cgroup").With(zap.String("interface", name))
	// Warn once per setting: a reload that rolls an interface applies it twice.
	last, seen := s.cg.warned.Swap(name, ic.Cgroup)
	warn := !seen || last.(config.Cgroup) != ic.Cgroup
	if s.cg.tree == nil {
		if ic.Cgroup.IsSet() && warn {
			log.Warn("the interface sets cgroup limits, which do not apply: taskd runs without cgroups", zap.String("why", s.cg.off),
				zap.Int64("memory_max", l.MemoryMax), zap.Int64("pids_max", l.PidsMax), zap.Int("cpu_weight", l.CPUWeight))
		}
		return nil
	}
	if missing := s.cg.tree.Missing(l); len(missing) > 0 && warn {
		log.Warn("cgroup limits of the interface do not apply: their controllers are not available in taskd's cgroup "+
			"(with systemd, Delegate=yes delegates them)", zap.String("controllers", strings.Join(missing, ", ")))
	}
	ci, err := s.cg.tree.Interface(name, l)
	if err != nil {
		log.Error("cgroup of the interface not set up as configured", zap.Error(err))
	}
	return ci
}

// startWorker is worker.Start, in a cgroup of its own made under ci (none when ci is
// nil: taskd runs without cgroups).
func startWorker(ctx context.Context, ci *cgroup.Interface, cfg worker.Config) (*worker.Worker, error) {
	if ci != nil {
		cw, err := ci.NewWorker(cfg.ID)
		if err != nil {
			return nil, &worker.StartError{Interface: cfg.Interface, ID: cfg.ID, Reason: "its cgroup could not be made: " + err.Error(), Err: err}
		}
		cfg.Cgroup = cw
	}
	return worker.Start(ctx, cfg)
}
