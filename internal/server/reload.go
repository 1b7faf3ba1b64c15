package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/crash"
	"github.com/taskd-dev/taskd/internal/pool"
	"github.com/taskd-dev/taskd/internal/wire"
)

// Live reload: the config file is read again and applied per interface, without stopping
// the daemon (SIGHUP, `systemctl reload`, `taskctl reload`). See docs/config.md for what
// each key does on a reload.

// table is the set of interfaces being served. It is never changed once stored in
// Server.tab: a reload stores a new one.
type table struct {
	pools   map[string]*pool.Pool
	names   []string        // sorted
	removed map[string]bool // removed by a reload and not added back since
}

// Reloading is what reloads need from the daemon's main. Set it with SetReloading.
type Reloading struct {
	// Load reads the config file again: config.Load of the file taskd started with.
	Load func() (*config.Config, error)
	// Level, if not nil, is the logger's level, which a reload sets from log.level; if
	// nil, a changed log.level needs a restart.
	Level *zap.AtomicLevel
	// Notify, if not nil, is called with true when a reload begins and with false when it
	// has been applied or refused (systemd's RELOADING=1 and READY=1).
	Notify func(reloading bool)
}

// SetReloading enables Reload. Call it before Run.
func (s *Server) SetReloading(r Reloading) { s.reload = r }

// InvalidConfigError is the error of a reload refused because the config file is not
// valid. Nothing was changed.
type InvalidConfigError struct{ Err error }

func (e *InvalidConfigError) Error() string {
	return fmt.Sprintf("reload refused, nothing changed: %v", e.Err)
}

func (e *InvalidConfigError) Unwrap() error { return e.Err }

// RemovedError refuses the checkouts of an interface that a reload removed.
type RemovedError struct{ Interface string }

func (e *RemovedError) Error() string {
	return fmt.Sprintf("interface %q was removed by a reload of taskd's config", e.Interface)
}

// ErrNoReload is the error of Reload when SetReloading was not called.
var ErrNoReload = errors.New("reload is not available: taskd was not given a config file to read again")

// Reload reads the config file again (Reloading.Load) and applies it; one reload runs at
// a time. A config that is not valid changes nothing (*InvalidConfigError). Otherwise,
// per interface: an added one starts; a removed one refuses new checkouts
// (*RemovedError) and stops once its held checkouts end; a changed one takes its pool
// keys in place, and if command, dir, env, user, group, umask or rlimits changed, gets a
// new generation of workers (pool.Roll); one whose only change is allow keeps its pool
// as it is (wire.ChangeAccess). Reload returns once every new generation has taken over
// or failed to start, not when old workers are gone. Daemon keys that only a restart
// applies are listed in the report's NeedsRestart; the others apply, and those changed
// since the last reload are listed in its Live.
//
// Reload is safe for concurrent use with everything else; during a shutdown it fails
// with pool.ErrShuttingDown.
func (s *Server) Reload(ctx context.Context) (*wire.ReloadReport, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.reload.Load == nil {
		return nil, ErrNoReload
	}
	if s.reload.Notify != nil {
		s.reload.Notify(true)
		defer s.reload.Notify(false)
	}
	s.log.Info("reloading the config")
	cfg, err := s.reload.Load()
	if err != nil {
		err = &InvalidConfigError{Err: err}
		s.log.Error("reload refused: the config is not valid; still running the previous one", zap.Error(err))
		return nil, err
	}

	tlsFiles, err := s.loadTLS(cfg) // read again even if unchanged: certificate rotation
	if err != nil {
		err = &InvalidConfigError{Err: err}
		s.log.Error("reload refused: the TLS files do not load; still running the previous config and certificates", zap.Error(err))
		return nil, err
	}

	rep := &wire.ReloadReport{}
	live := func(k string) bool {
		return config.DaemonKeyReload(k) == config.ReloadLive && (k != "log.level" || s.reload.Level != nil)
	}
	for _, k := range config.ChangedDaemonKeys(s.cfg, *cfg) { // since the start: until a restart
		if !live(k) {
			rep.NeedsRestart = append(rep.NeedsRestart, k)
		}
	}
	for _, k := range config.ChangedDaemonKeys(s.applied, *cfg) { // since the last reload
		if live(k) {
			rep.Live = append(rep.Live, k)
		}
	}
	applied := *cfg
	applied.Interfaces = maps.Clone(cfg.Interfaces)
	s.setAccess(*cfg) // before the interfaces: one added is never served without its allow
	rolls, err := s.applyInterfaces(cfg, rep)
	if err != nil {
		return nil, err
	}
	s.setWatches(cfg.Interfaces)
	if tlsFiles != nil {
		s.tls.set(tlsFiles) // new connections get it; open ones keep theirs
	}

	// New generations, side by side: each returns when its workers have taken over.
	var wg sync.WaitGroup
	for _, r := range rolls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer crash.OnPanic(s.log, "reload roll")
			ch := &rep.Interfaces[r.index]
			gen, err := r.p.Roll(ctx, s.spawner(r.name, r.ic))
			ch.Generation = gen
			if err != nil {
				ch.Change, ch.Error = wire.ChangeFailed, err.Error()
			}
		}()
	}
	wg.Wait()
	for _, r := range rolls {
		if rep.Interfaces[r.index].Change == wire.ChangeFailed {
			applied.Interfaces[r.name] = r.running // a later reload tries again
		}
	}

	if s.reload.Level != nil && cfg.Log.Level != s.applied.Log.Level {
		if l, err := zapcore.ParseLevel(cfg.Log.Level); err == nil {
			s.reload.Level.SetLevel(l)
		}
	}
	s.grace.Store(int64(cfg.ShutdownGrace))
	s.applied = applied
	s.logReport(rep)
	return rep, nil
}

// rollJob is an interface that a reload gives a new generation.
type rollJob struct {
	name    string
	p       *pool.Pool
	ic      config.Interface // the new settings
	running config.Interface // the new settings with the old command, dir and env
	index   int              // in the report
}

// applyInterfaces compares cfg's interfaces with those applied last, stores the new table,
// applies pool keys in place, drains the removed interfaces, and returns the interfaces
// that need a new generation; each interface gets its entry in rep. It fails only while
// the daemon shuts down (then it changes nothing).
func (s *Server) applyInterfaces(cfg *config.Config, rep *wire.ReloadReport) (rolls []rollJob, err error) {
	old := s.applied.Interfaces
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil, pool.ErrShuttingDown
	}
	oldTab := s.tab.Load()
	tab := &table{pools: make(map[string]*pool.Pool, len(cfg.Interfaces)), removed: maps.Clone(oldTab.removed)}
	if tab.removed == nil {
		tab.removed = make(map[string]bool)
	}
	names := slices.Sorted(maps.Keys(old))
	for name := range cfg.Interfaces {
		if _, ok := old[name]; !ok {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		oi, had := old[name]
		ni, has := cfg.Interfaces[name]
		ch := wire.InterfaceChange{Name: name}
		scaled := s.steer.unscale(name) // a scale lasts until the next reload
		switch {
		case !had:
			p := pool.New(s.poolConfig(name, ni), s.spawner(name, ni))
			tab.pools[name] = p
			delete(tab.removed, name)
			ch.Change, ch.Generation = wire.ChangeAdded, p.Generation()
		case !has:
			p := oldTab.pools[name]
			tab.removed[name] = true
			p.Drain(&RemovedError{Interface: name}) // before anything else can drain it
			s.removing[p] = name
			s.wg.Add(1)
			go s.finishRemoved(p, name)
			ch.Change = wire.ChangeRemoved
		default:
			p := oldTab.pools[name]
			tab.pools[name] = p
			ch.Keys = config.ChangedInterfaceKeys(oi, ni)
			ch.Change = wire.ChangeUnchanged
			newGen := slices.ContainsFunc(ch.Keys, func(k string) bool {
				return config.InterfaceKeyReload(k) == config.ReloadNewGeneration
			})
			accessOnly := !slices.ContainsFunc(ch.Keys, func(k string) bool { return !config.IsAccessKey(k) })
			switch {
			case len(ch.Keys) > 0 && !accessOnly:
				ch.Change = wire.ChangeResized
				running := ni
				if newGen {
					running.Command, running.Dir, running.Env = oi.Command, oi.Dir, oi.Env
					running.User, running.Group, running.Umask, running.Rlimits = oi.User, oi.Group, oi.Umask, oi.Rlimits
					ch.Change = wire.ChangeNewGeneration
					rolls = append(rolls, rollJob{name: name, p: p, ic: ni, running: running, index: len(rep.Interfaces)})
				}
				p.Reconfigure(s.poolConfig(name, running), s.spawner(name, running))
			case scaled:
				// Scaled by an admin request (admin.go): the file's sizes apply again.
				ch.Change, ch.Keys = wire.ChangeResized, append(ch.Keys, "min_idle", "max_workers")
				p.Reconfigure(s.poolConfig(name, ni), nil)
			case len(ch.Keys) > 0:
				// Only allow: its new rule (setAccess, above) applies to the next request
				// of every connection; the pool and its workers stay as they are.
				ch.Change = wire.ChangeAccess
			}
			ch.Generation = p.Generation()
		}
		rep.Interfaces = append(rep.Interfaces, ch)
	}
	tab.names = slices.Sorted(maps.Keys(tab.pools))
	s.tab.Store(tab)
	return rolls, nil
}

// finishRemoved closes the pool of a removed interface once its held checkouts have
// ended. It runs on a goroutine of the server's (Server.wg); a shutdown meanwhile closes
// the pool itself.
func (s *Server) finishRemoved(p *pool.Pool, name string) {
	defer s.wg.Done()
	defer crash.OnPanic(s.log, "removed interface")
	if p.WaitIdle(s.halt) != nil {
		return // shutting down: shutdown closes it
	}
	p.Close()
	s.mu.Lock()
	delete(s.removing, p)
	s.mu.Unlock()
	s.log.Info("removed interface stopped: its last checkout ended", zap.String("interface", name))
}

// logReport logs what a reload did, one line per interface that changed.
func (s *Server) logReport(rep *wire.ReloadReport) {
	for _, ch := range rep.Interfaces {
		switch ch.Change {
		case wire.ChangeUnchanged:
		case wire.ChangeFailed:
			s.log.Error("reload: interface kept its previous workers: the new generation did not start",
				zap.String("interface", ch.Name), zap.Strings("keys", ch.Keys), zap.String("error", ch.Error))
		default:
			s.log.Info("reload: interface "+ch.Change, zap.String("interface", ch.Name),
				zap.Strings("keys", ch.Keys), zap.Int("generation", ch.Generation))
		}
	}
	if len(rep.Live) > 0 {
		s.log.Info("reload: top-level keys applied live", zap.Strings("keys", rep.Live))
	}
	if len(rep.NeedsRestart) > 0 {
		s.log.Warn("reload: these keys changed but take effect only when taskd restarts",
			zap.Strings("needs_restart", rep.NeedsRestart))
	}
	s.log.Info("reload applied")
}

// shutdownGrace returns shutdown_grace as last applied.
func (s *Server) shutdownGrace() time.Duration { return time.Duration(s.grace.Load()) }
