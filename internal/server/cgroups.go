package server

import (
	"errors"
	"strings"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/cgroup"
	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/worker"
)

// Worker cgroups (internal/cgroup): when taskd runs with a delegated cgroup v2, each
// worker is spawned straight into a cgroup of its own under <own>/workers/<interface>/,
// with the interface's cgroup limits, and when it has been reaped its cgroup is killed
// whole and removed. Without one, workers run as before and the limits do not apply.

// setupCgroups finds taskd's delegated cgroup and lays out the workers' tree in it
// (s.cgroups), or logs, once, why cgroup limits are off. Run calls it before it starts
// the pools.
func (s *Server) setupCgroups() {
	log := s.log.Named("cgroup")
	f, err := cgroup.Detect()
	if err == nil {
		s.cgroups, err = cgroup.Setup(f, log)
		if err != nil {
			err = &cgroup.OffError{Reason: "setting up " + f.Dir + ": " + err.Error()}
		}
	}
	if err != nil {
		s.cgroupsOff = err.Error()
		var off *cgroup.OffError
		if errors.As(err, &off) {
			s.cgroupsOff = off.Reason
		}
		log.Info("cgroup limits are off: " + s.cgroupsOff + "; workers run in taskd's own cgroup, without limits of their own")
		return
	}
	log.Info("cgroups on: each worker runs in a cgroup of its own, killed whole when the worker ends",
		zap.String("cgroup", s.cgroups.Dir()), zap.Strings("controllers", s.cgroups.Enabled()))
}

// closeCgroups removes the workers' cgroups, once the pools are closed.
func (s *Server) closeCgroups() {
	if s.cgroups == nil {
		return
	}
	if err := s.cgroups.Close(); err != nil {
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
	last, seen := s.cgroupWarned.Swap(name, ic.Cgroup)
	warn := !seen || last.(config.Cgroup) != ic.Cgroup
	if s.cgroups == nil {
		if ic.Cgroup.IsSet() && warn {
			log.Warn("the interface sets cgroup limits, which do not apply: taskd runs without cgroups", zap.String("why", s.cgroupsOff),
				zap.Int64("memory_max", l.MemoryMax), zap.Int64("pids_max", l.PidsMax), zap.Int("cpu_weight", l.CPUWeight))
		}
		return nil
	}
	if missing := s.cgroups.Missing(l); len(missing) > 0 && warn {
		log.Warn("cgroup limits of the interface do not apply: their controllers are not available in taskd's cgroup "+
			"(with systemd, Delegate=yes delegates them)", zap.String("controllers", strings.Join(missing, ", ")))
	}
	ci, err := s.cgroups.Interface(name, l)
	if err != nil {
		log.Error("cgroup of the interface not set up as configured", zap.Error(err))
	}
	return ci
}

// workerCgroup makes the cgroup of worker id of ci, for worker.Config.Cgroup; nil ci
// (no cgroups) gives a nil Cgroup.
func workerCgroup(ci *cgroup.Interface, name, id string) (worker.Cgroup, error) {
	if ci == nil {
		return nil, nil
	}
	cw, err := ci.NewWorker(id)
	if err != nil {
		return nil, &worker.StartError{Interface: name, ID: id, Reason: "its cgroup could not be made: " + err.Error(), Err: err}
	}
	return cw, nil
}
