package client

import (
	"context"
	"slices"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// DefaultReloadTimeout is how long Reload waits at least when its context has no
// deadline: taskd answers a reload only once it is applied, which takes as long as the
// new workers take to get ready (up to their setup_timeout).
const DefaultReloadTimeout = 5 * time.Minute

// ReloadReport is what a reload did (Client.Reload): the change to each interface, and
// the changed keys that only a restart of taskd applies. It is a plain value, owned by
// the caller. Its JSON form, which `taskctl reload -o json` prints, is the one the
// client protocol carries.
type ReloadReport struct {
	// Interfaces has one entry per interface of the old or the new config, sorted by
	// name: the removed ones and the unchanged ones are included.
	Interfaces []InterfaceChange `json:"interfaces"`
	// Live lists the top-level keys that changed in the file since the last reload and
	// were applied in place, such as "admin", "hide_forbidden" or "tls.cert_file". Empty
	// if there are none.
	Live []string `json:"live,omitempty"`
	// NeedsRestart lists the top-level keys that changed in the file but that a reload
	// does not apply, such as "listen" or "socket_mode": they take effect when taskd is
	// restarted. Empty if there are none.
	NeedsRestart []string `json:"needs_restart,omitempty"`
}

// InterfaceChange is what a reload did to one interface.
type InterfaceChange struct {
	Name   string `json:"name"`
	Change string `json:"change"` // one of the Change* constants; taskd may add more
	// Keys lists the interface's keys that changed, such as "max_workers" or "env"
	// (empty for ChangeAdded, ChangeRemoved and ChangeUnchanged).
	Keys []string `json:"keys,omitempty"`
	// Generation is the interface's generation after the reload (see
	// InterfaceStatus.Generation); 0 if taskd did not report one.
	Generation int `json:"generation,omitempty"`
	// Error, for ChangeFailed, says why the new generation's workers did not start.
	Error string `json:"error,omitempty"`
}

// How a reload changed an interface: the values of InterfaceChange.Change.
const (
	// ChangeAdded: the interface is new; its workers are starting.
	ChangeAdded = "added"
	// ChangeRemoved: the interface is gone from the file. taskd refuses new checkouts of
	// it (ErrInterfaceRemoved); the checkouts held at the reload finish, then its workers
	// stop.
	ChangeRemoved = "removed"
	// ChangeResized: pool keys (such as min_idle, max_workers, timeouts) or cgroup limits
	// changed, maybe with allow, and apply in place; no worker was restarted for it (a
	// smaller max_workers retires the workers beyond it, with exit reason ExitReload).
	ChangeResized = "resized"
	// ChangeAccess: only who may use the interface changed (its allow rule). The new rule
	// applies to the next request of every connection, those open before the reload
	// included (a checkout already granted is not taken back); no worker and no pool
	// setting was touched. Keys lists "allow".
	ChangeAccess = "access_changed"
	// ChangeNewGeneration: what the workers run changed (command, dir or env). The new
	// generation's workers were started and took over; the old ones retire as their
	// checkouts end.
	ChangeNewGeneration = "new_generation"
	// ChangeUnchanged: nothing of the interface changed.
	ChangeUnchanged = "unchanged"
	// ChangeFailed: the new generation's workers could not start (InterfaceChange.Error
	// says why). The old generation keeps serving, with the old command, dir and env; fix
	// the file and reload again.
	ChangeFailed = "failed"
)

// Reload asks taskd to re-read its config file and apply it, as SIGHUP and `systemctl
// reload taskd` do, and returns what changed. taskd re-reads the file it was started
// with: a client cannot send a config.
//
// taskd validates the whole file first. If it is not valid, nothing changes and the
// error matches ErrInvalidConfig; its text lists every problem, one per line. Otherwise
// taskd applies the file interface by interface and answers once it is applied, which
// means once the workers of each new generation are ready. An interface whose new
// generation could not start is reported as ChangeFailed and keeps serving with its old
// workers: that is not an error of Reload, so check the report (taskctl reload exits
// non-zero for it). Changed keys that only a restart applies are listed in
// ReloadReport.NeedsRestart.
//
// Because the answer can take as long as the slowest worker's setup_timeout,
// Config.Timeout does not bound Reload on its own: if ctx has no deadline, Reload waits
// for the longer of Config.Timeout and DefaultReloadTimeout (or for as long as ctx
// allows if Config.Timeout is negative). A Reload that gives up does not undo or stop
// the reload; taskd goes on applying it. Like Ping, Reload fails at once if taskd cannot
// be dialled.
func (c *Client) Reload(ctx context.Context) (ReloadReport, error) {
	m, _, err := c.admin(ctx, adminOp{t: wire.TReload, timeout: c.reloadTimeout(),
		slow: "taskd answers a reload once it is applied, when the new workers are ready; " +
			"give it a longer deadline if their setup takes long, and check taskd's log; " +
			"a taskd older than this client does not answer reload at all"})
	if err != nil {
		return ReloadReport{}, err
	}
	if m.Reload == nil {
		return ReloadReport{}, &wrapped{text: ErrProtocol.Error() + ": taskd answered reload with " + m.T + " instead of reloaded; this is a daemon bug", errs: []error{ErrProtocol}}
	}
	return reportFromWire(m.Reload), nil
}

// reloadTimeout is how long Reload waits if its context has no deadline: the longer of
// Config.Timeout and DefaultReloadTimeout, or 0 (no bound) if Config.Timeout is negative.
func (c *Client) reloadTimeout() time.Duration {
	if c.timeout == 0 {
		return 0
	}
	return max(c.timeout, DefaultReloadTimeout)
}

// reportFromWire converts the reload report as taskd sends it: the one place where the
// client protocol's report becomes ReloadReport.
func reportFromWire(wr *wire.ReloadReport) ReloadReport {
	r := ReloadReport{Interfaces: make([]InterfaceChange, 0, len(wr.Interfaces)),
		Live: slices.Clone(wr.Live), NeedsRestart: slices.Clone(wr.NeedsRestart)}
	for _, wi := range wr.Interfaces {
		r.Interfaces = append(r.Interfaces, InterfaceChange{Name: wi.Name, Change: wi.Change,
			Keys: slices.Clone(wi.Keys), Generation: wi.Generation, Error: wi.Error})
	}
	return r
}
