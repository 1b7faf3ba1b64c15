package server

import (
	"errors"
	"fmt"
	"sort"

	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/wire"
)

// Steering a live daemon: the admin requests of the client protocol ({"t":"admin","op":...}),
// which drain and resume an interface, retire or kill a worker, and scale a pool until
// the next reload. They, and reload, are allowed only to admin peers (Peer.Admin); status,
// ping and the other read-only requests are open to any peer that may connect.

// DrainedError refuses the checkouts of an interface that an admin request drained.
type DrainedError struct{ Interface string }

func (e *DrainedError) Error() string {
	return fmt.Sprintf("interface %q is drained by an admin: it grants no new checkouts until `taskctl resume %s`", e.Interface, e.Interface)
}

// adminError is the refusal of an admin request: its code and message.
type adminError struct{ code, msg string }

func (e *adminError) Error() string { return e.msg }

// steering is what admin requests keep in the server. It is guarded by Server.reloadMu.
type steering struct {
	scaled map[string]bool // interfaces scaled since the last reload: the next one re-applies the file's sizes
}

// unscale reports whether interface name was scaled since the last reload, and forgets it.
// reloadMu is held.
func (st *steering) unscale(name string) bool {
	was := st.scaled[name]
	delete(st.scaled, name)
	return was
}

// refuseNotAdmin refuses request m (reload, or an admin request) if the peer may not make
// it, and reports whether it did.
func (ss *session) refuseNotAdmin(m *wire.ClientMsg) bool {
	if ss.isAdmin() {
		return false
	}
	what := m.T
	if m.T == wire.TAdmin {
		what = m.Op
	}
	ss.s.guard.adminRefused.Inc()
	who := ss.s.guard.describe(ss.peer)
	ss.log.Warn("refused an admin request: the peer is not an admin", zap.String("op", what), zap.String("who", who))
	ss.send(&wire.ClientMsg{T: wire.TRefused, ID: m.ID, Code: wire.CodeNotPermitted,
		Msg: fmt.Sprintf("%s is an admin request: only %s, and the peers that taskd's admin setting names, may make it, and the peer is %s; "+
			"run taskctl as one of them, or ask taskd's admin to add this user to admin", what, builtinAdmins(), who)})
	return true
}

// admin handles an admin request on a goroutine of the session's (a scale waits for a
// reload in progress), and answers adminok or refused.
func (ss *session) admin(m *wire.ClientMsg) {
	if ss.refuseNotAdmin(m) {
		return
	}
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return
	}
	ss.acquires.Add(1)
	ss.mu.Unlock()
	req := *m // m aliases the reader's buffer only through its payloads, which admin has none of
	go func() {
		defer ss.acquires.Done()
		defer crash.OnPanic(ss.log, "session admin")
		msg, err := ss.s.admin(&req, ss.log)
		if err != nil {
			code := wire.CodeUnavailable
			var ae *adminError
			if errors.As(err, &ae) {
				code = ae.code
			}
			ss.send(&wire.ClientMsg{T: wire.TRefused, ID: req.ID, Code: code, Msg: err.Error()})
			return
		}
		ss.send(&wire.ClientMsg{T: wire.TAdminOK, ID: req.ID, Msg: msg})
	}()
}

// admin does admin request m, logging it with log (the session's, which names the peer),
// and returns what it did.
func (s *Server) admin(m *wire.ClientMsg, log *zap.Logger) (string, error) {
	switch m.Op {
	case wire.OpDrain, wire.OpResume, wire.OpScale:
		p, err := s.adminPool(m.Iface)
		if err != nil {
			return "", err
		}
		switch m.Op {
		case wire.OpDrain:
			p.Pause(&DrainedError{Interface: m.Iface})
			log.Info("interface drained by an admin request", zap.String("interface", m.Iface))
			return fmt.Sprintf("interface %q drained: new checkouts are refused (interface_draining), held ones go on (%d now); `taskctl resume %s` undoes it",
				m.Iface, p.Busy(), m.Iface), nil
		case wire.OpResume:
			if !p.Resume() {
				return fmt.Sprintf("interface %q was not drained; it serves checkouts", m.Iface), nil
			}
			log.Info("interface resumed by an admin request", zap.String("interface", m.Iface))
			return fmt.Sprintf("interface %q resumed: it serves checkouts again", m.Iface), nil
		}
		return s.scale(p, m.Iface, m.MinIdle, m.MaxWorkers, log)
	case wire.OpRetire, wire.OpKill:
		return s.steerWorker(m.Op, m.Worker, log)
	}
	return "", &adminError{wire.CodeInvalidRequest, fmt.Sprintf("unknown admin op %q: this taskd knows drain, resume, retire, kill and scale", m.Op)}
}

// adminPool returns the pool of interface name, or the refusal for an unknown one.
func (s *Server) adminPool(name string) (*pool.Pool, error) {
	tab := s.tab.Load()
	if p := tab.pools[name]; p != nil {
		return p, nil
	}
	if name == "" {
		return nil, &adminError{wire.CodeInvalidRequest, "the admin request names no interface (iface)"}
	}
	msg := fmt.Sprintf("unknown interface %q", name)
	if tab.removed[name] {
		msg = (&RemovedError{Interface: name}).Error()
	}
	return nil, &adminError{wire.CodeUnknownInterface, fmt.Sprintf("%s; this daemon serves: %v", msg, tab.names)}
}

// scale sets interface name's min_idle and max_workers until the next reload, which
// applies the file's again (applyInterfaces).
func (s *Server) scale(p *pool.Pool, name string, minIdle, maxWorkers int, log *zap.Logger) (string, error) {
	if maxWorkers < 1 || minIdle < 0 || minIdle > maxWorkers {
		return "", &adminError{wire.CodeInvalidRequest, fmt.Sprintf(
			"scale %s: min_idle %d, max_workers %d is not valid: max_workers must be at least 1, and min_idle between 0 and max_workers",
			name, minIdle, maxWorkers)}
	}
	s.reloadMu.Lock() // not in the middle of a reload
	defer s.reloadMu.Unlock()
	if s.tab.Load().pools[name] != p {
		return "", &adminError{wire.CodeUnknownInterface, fmt.Sprintf("interface %q was removed by a reload meanwhile", name)}
	}
	cfg := p.Config()
	oldMin, oldMax := cfg.MinIdle, cfg.MaxWorkers
	p.Scale(minIdle, maxWorkers)
	if s.steer.scaled == nil {
		s.steer.scaled = make(map[string]bool)
	}
	s.steer.scaled[name] = true
	log.Info("interface scaled by an admin request, until the next reload", zap.String("interface", name),
		zap.Int("old_min_idle", oldMin), zap.Int("min_idle", minIdle),
		zap.Int("old_max_workers", oldMax), zap.Int("max_workers", maxWorkers))
	return fmt.Sprintf("interface %q scaled: min_idle %d → %d, max_workers %d → %d, until the next reload (which applies the config file's again)",
		name, oldMin, minIdle, oldMax, maxWorkers), nil
}

// steerWorker retires or kills the worker whose id or pid is ref, in whichever interface
// has it (a removed one still finishing included).
func (s *Server) steerWorker(op, ref string, log *zap.Logger) (string, error) {
	if ref == "" {
		return "", &adminError{wire.CodeInvalidRequest, "the admin request names no worker (worker: its id, such as \"echo-3\", or its pid)"}
	}
	type named struct {
		name string
		p    *pool.Pool
	}
	tab := s.tab.Load()
	var pools []named
	for _, name := range tab.names {
		pools = append(pools, named{name, tab.pools[name]})
	}
	s.mu.Lock()
	for p, name := range s.removing {
		pools = append(pools, named{name, p})
	}
	s.mu.Unlock()
	sort.SliceStable(pools, func(i, j int) bool { return pools[i].name < pools[j].name })
	for _, x := range pools {
		var (
			busy bool
			err  error
			id   string
			pid  int
		)
		if op == wire.OpKill {
			w, b, e := x.p.KillWorker(ref, errors.New("killed by an admin request (taskctl kill)"))
			busy, err = b, e
			if w != nil {
				id, pid = w.ID(), w.PID()
			}
		} else {
			w, b, e := x.p.RetireWorker(ref)
			busy, err = b, e
			if w != nil {
				id, pid = w.ID(), w.PID()
			}
		}
		if errors.Is(err, pool.ErrNoWorker) {
			continue
		}
		if err != nil {
			return "", &adminError{wire.CodeInvalidRequest, err.Error()}
		}
		log.Info("worker "+map[string]string{wire.OpKill: "killed", wire.OpRetire: "retired"}[op]+" by an admin request",
			zap.String("interface", x.name), zap.String("worker", id), zap.Int("pid", pid), zap.Bool("busy", busy))
		switch {
		case op == wire.OpKill && busy:
			return fmt.Sprintf("worker %s (pid %d) of %q killed; its checkout lost its worker", id, pid, x.name), nil
		case op == wire.OpKill:
			return fmt.Sprintf("worker %s (pid %d) of %q killed; it was idle", id, pid, x.name), nil
		case busy:
			return fmt.Sprintf("worker %s (pid %d) of %q is busy: it is retired when its checkout is released, and replaced", id, pid, x.name), nil
		}
		return fmt.Sprintf("worker %s (pid %d) of %q retired; it was idle", id, pid, x.name), nil
	}
	return "", &adminError{wire.CodeUnknownWorker, fmt.Sprintf("no worker %q: give a worker's id or pid as `taskctl status` shows them", ref)}
}
