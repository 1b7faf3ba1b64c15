package client

import (
	"encoding/json"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// DaemonStatus is taskd's status report (Client.DaemonStatus): a snapshot of its
// interfaces and their workers, for operators. It is a plain value, owned by the caller.
//
// Its JSON form, which `taskctl status -o json` prints, carries durations as seconds
// with a fraction: uptime_sec here, age_sec and call_sec in a worker.
type DaemonStatus struct {
	Version string        `json:"version"` // taskd's version
	PID     int           `json:"pid"`     // taskd's process id
	Uptime  time.Duration `json:"-"`       // since taskd started
	// Draining means that taskd is shutting down: it takes no new connection, and stops
	// its workers once the held checkouts are released or shutdown_grace has passed.
	Draining   bool              `json:"draining,omitempty"`
	Interfaces []InterfaceStatus `json:"interfaces"` // sorted by name
}

// InterfaceStatus describes one interface's pool of workers.
type InterfaceStatus struct {
	Name          string `json:"name"`
	Live          int    `json:"live"`     // worker processes started and not yet reaped: starting, warming, idle, busy and retiring
	Idle          int    `json:"idle"`     // ready and waiting for a checkout
	Busy          int    `json:"busy"`     // checked out
	Starting      int    `json:"starting"` // spawned, not yet ready
	Queued        int    `json:"queued"`   // checkouts waiting for a worker
	MinIdle       int    `json:"min_idle"`
	MaxWorkers    int    `json:"max_workers"`
	Checkouts     uint64 `json:"checkouts"` // checkouts granted since taskd started
	Calls         uint64 `json:"calls"`     // calls sent to its workers since taskd started (0 from a taskd older than this count)
	Spawns        uint64 `json:"spawns"`    // worker processes started since taskd started
	SpawnFailures uint64 `json:"spawn_failures"`
	LastError     string `json:"last_error,omitempty"` // why the last start failed; cleared when a worker starts
	// Retiring is how many of the live workers are retiring. They no longer count against
	// MaxWorkers: a retiring worker's replacement starts while it drains.
	Retiring int `json:"retiring,omitempty"`
	// Generation counts the reloads that changed what the interface's workers run
	// (command, dir or env), starting at 1. Each worker has the generation it was
	// started for (WorkerStatus.Gen): after such a reload, the older generation's
	// workers retire as their checkouts end.
	Generation int `json:"generation"`
	// Removed means that a reload removed the interface: taskd refuses new checkouts of
	// it (ErrInterfaceRemoved), and once the held ones are released its workers stop and
	// it leaves the status.
	Removed bool `json:"removed,omitempty"`
	// Draining means that an admin drained the interface (Client.Drain, taskctl drain):
	// taskd refuses new checkouts of it (ErrDraining) until it is resumed; held ones go on.
	Draining bool `json:"draining,omitempty"`
	// Exits counts the workers that ended since taskd started, by reason; reasons with no
	// exit are left out. The reasons are the Exit* constants; taskd may add more.
	Exits   map[string]uint64 `json:"exits,omitempty"`
	Workers []WorkerStatus    `json:"workers"` // oldest first
	// HeldTooLong counts the checkouts held longer than the interface's
	// checkout_warn_after, and SlowCalls the calls that ran longer than its slow_call,
	// since taskd started (both 0 while those keys are off).
	HeldTooLong uint64 `json:"held_too_long,omitempty"`
	SlowCalls   uint64 `json:"slow_calls,omitempty"`
	// CallLatency is the histogram of the interface's call durations since taskd started,
	// over all methods and outcomes (the sum of taskd_call_duration_seconds); nil before its
	// first call, or from a taskd older than it. Two snapshots give the quantiles of the
	// calls between them (LatencyHistogram.Quantile).
	CallLatency *LatencyHistogram `json:"call_latency,omitempty"`
	// Allow is the interface's allow rule in taskd's config: who may check it out. nil
	// means anyone who can connect to taskd (Access.String says "anyone").
	Allow *Access `json:"allow,omitempty"`
}

// Access is an access rule of taskd's config (an interface's allow): a client may use
// the interface if any list names it: its user or one of the user's groups (on taskd's
// unix socket), its uid or gid, or a name of its verified TLS client certificate. An
// empty Access allows nobody. It is a plain value, owned by the caller.
type Access struct {
	Users    []string `json:"users,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	UIDs     []int    `json:"uids,omitempty"`
	GIDs     []int    `json:"gids,omitempty"`
	TLSNames []string `json:"tls_names,omitempty"`
}

// String describes the rule for a human: "anyone" for nil, "nobody" for an empty rule,
// else its lists, as "users www-data, app; groups web; uids 33".
func (a *Access) String() string {
	if a == nil {
		return "anyone"
	}
	var parts []string
	add := func(what string, list []string) {
		if len(list) > 0 {
			parts = append(parts, what+" "+strings.Join(list, ", "))
		}
	}
	ints := func(ids []int) []string {
		s := make([]string, len(ids))
		for i, id := range ids {
			s[i] = strconv.Itoa(id)
		}
		return s
	}
	add("users", a.Users)
	add("groups", a.Groups)
	add("uids", ints(a.UIDs))
	add("gids", ints(a.GIDs))
	add("tls_names", a.TLSNames)
	if len(parts) == 0 {
		return "nobody"
	}
	return strings.Join(parts, "; ")
}

// LatencyHistogram is a cumulative histogram of durations: Counts[i] observations took at
// most Bounds[i] seconds, and Total were observed in all (the rest took longer than the
// last bound). Bounds are taskd's histogram buckets, the same in every snapshot of one
// daemon.
type LatencyHistogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Total  uint64    `json:"total"`
}

// Quantile estimates the q-quantile (0 < q < 1) of the durations observed after since (an
// earlier snapshot of the same histogram; nil: since taskd started), interpolating
// linearly inside a bucket as Prometheus's histogram_quantile does. ok is false when no
// duration was observed in between, or since is not an earlier snapshot of h (taskd
// restarted). A quantile past the last bound is reported as the last bound.
func (h *LatencyHistogram) Quantile(q float64, since *LatencyHistogram) (d time.Duration, ok bool) {
	if h == nil || q <= 0 || q >= 1 || len(h.Counts) != len(h.Bounds) {
		return 0, false
	}
	count := func(i int) (uint64, bool) { // observations ≤ Bounds[i] in the interval; i == len: all
		now, then := h.Total, uint64(0)
		if i < len(h.Counts) {
			now = h.Counts[i]
		}
		if since != nil {
			if i < len(since.Counts) {
				then = since.Counts[i]
			} else {
				then = since.Total
			}
		}
		return now - then, now >= then
	}
	if since != nil && (len(since.Bounds) != len(h.Bounds) || len(since.Counts) != len(h.Counts)) {
		return 0, false
	}
	total, good := count(len(h.Counts))
	if !good || total == 0 {
		return 0, false
	}
	rank := q * float64(total)
	lower, below := 0.0, uint64(0)
	for i, upper := range h.Bounds {
		n, good := count(i)
		if !good {
			return 0, false
		}
		if float64(n) >= rank {
			in := n - below
			frac := 1.0
			if in > 0 {
				frac = (rank - float64(below)) / float64(in)
			}
			return seconds(lower + (upper-lower)*frac), true
		}
		lower, below = upper, n
	}
	return seconds(h.Bounds[len(h.Bounds)-1]), true
}

// Reasons a worker ends, the keys of InterfaceStatus.Exits.
const (
	ExitMaxCheckouts  = "max_checkouts"  // recycled: it served max_checkouts
	ExitMaxAge        = "max_age"        // recycled: it reached its max_age
	ExitMaxRSS        = "max_rss"        // recycled: its process tree's RSS exceeded max_rss
	ExitBye           = "bye"            // the worker asked to be retired
	ExitIdleTimeout   = "idle_timeout"   // idle above min_idle for idle_timeout
	ExitReleased      = "released"       // its checkout retired it (a remote error not kept, the client's MaxCheckouts)
	ExitCallTimeout   = "call_timeout"   // killed: a call ran past call_timeout
	ExitProtocolError = "protocol_error" // killed: it broke the worker protocol
	ExitKilled        = "killed"         // killed for its checkout: aborted, a deadline passed, released with calls running
	ExitCrashed       = "crashed"        // it ended on its own (a crash, an exit, a signal from outside taskd)
	ExitShutdown      = "shutdown"       // stopped because taskd shut down
	ExitReload        = "reload"         // retired by a reload: it was of a replaced generation, or max_workers shrank
	ExitAdmin         = "admin"          // retired or killed by an admin request (RetireWorker, KillWorker)
)

// WorkerStatus describes one worker process.
type WorkerStatus struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
	// State is "idle", "busy" (checked out), "retiring", or "warming": started by a
	// reload for the interface's new generation, it serves no checkout until that
	// generation takes over. taskd may add states.
	State     string        `json:"state"`
	Gen       int           `json:"gen"`       // the interface's generation it was started for
	Checkouts int           `json:"checkouts"` // checkouts it has served, the current one included
	Age       time.Duration `json:"-"`         // since it was started
	// Method is the method of the call the worker is running ("" for a function-style
	// call), and CallRunning how long that call has been running. A worker running no
	// call has both zero.
	Method      string        `json:"method,omitempty"`
	CallRunning time.Duration `json:"-"`
	// RSS is the worker process's resident memory in bytes, read when taskd answered
	// the status request (0: unknown).
	RSS int64 `json:"rss,omitempty"`
}

// MarshalJSON encodes s with Uptime as "uptime_sec".
func (s DaemonStatus) MarshalJSON() ([]byte, error) {
	type plain DaemonStatus
	return json.Marshal(struct {
		plain
		UptimeSec float64 `json:"uptime_sec"`
	}{plain(s), s.Uptime.Seconds()})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (s *DaemonStatus) UnmarshalJSON(b []byte) error {
	type plain DaemonStatus
	v := struct {
		*plain
		UptimeSec float64 `json:"uptime_sec"`
	}{plain: (*plain)(s)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.Uptime = seconds(v.UptimeSec)
	return nil
}

// MarshalJSON encodes w with Age as "age_sec" and CallRunning as "call_sec".
func (w WorkerStatus) MarshalJSON() ([]byte, error) {
	type plain WorkerStatus
	return json.Marshal(struct {
		plain
		AgeSec  float64 `json:"age_sec"`
		CallSec float64 `json:"call_sec,omitempty"`
	}{plain(w), w.Age.Seconds(), w.CallRunning.Seconds()})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (w *WorkerStatus) UnmarshalJSON(b []byte) error {
	type plain WorkerStatus
	v := struct {
		*plain
		AgeSec  float64 `json:"age_sec"`
		CallSec float64 `json:"call_sec"`
	}{plain: (*plain)(w)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	w.Age, w.CallRunning = seconds(v.AgeSec), seconds(v.CallSec)
	return nil
}

// statusFromWire converts the status report as taskd sends it: the one place where the
// client protocol's status becomes DaemonStatus.
func statusFromWire(ws *wire.Status) DaemonStatus {
	st := DaemonStatus{Version: ws.Version, PID: ws.PID, Uptime: seconds(ws.UptimeSec),
		Draining: ws.Draining, Interfaces: make([]InterfaceStatus, 0, len(ws.Interfaces))}
	for _, wi := range ws.Interfaces {
		is := InterfaceStatus{Name: wi.Name, Live: wi.Live, Idle: wi.Idle, Busy: wi.Busy,
			Starting: wi.Starting, Queued: wi.Queued, MinIdle: wi.MinIdle, MaxWorkers: wi.MaxWorkers,
			Checkouts: wi.Checkouts, Calls: wi.Calls, Spawns: wi.Spawns, SpawnFailures: wi.SpawnFailures,
			LastError: wi.LastError, Retiring: wi.Retiring, Generation: wi.Generation,
			Removed: wi.Removed, Draining: wi.Draining, Exits: maps.Clone(wi.Exits), HeldTooLong: wi.HeldTooLong, SlowCalls: wi.SlowCalls,
			CallLatency: latencyFromWire(wi.CallLatency), Allow: accessFromWire(wi.Allow),
			Workers: make([]WorkerStatus, 0, len(wi.Workers))}
		for _, w := range wi.Workers {
			is.Workers = append(is.Workers, WorkerStatus{ID: w.ID, PID: w.PID, State: w.State,
				Gen: w.Gen, Checkouts: w.Checkouts, Age: seconds(w.AgeSec), Method: w.Method,
				CallRunning: seconds(w.CallSec), RSS: w.RSS})
		}
		st.Interfaces = append(st.Interfaces, is)
	}
	return st
}

func accessFromWire(a *wire.Access) *Access {
	if a == nil {
		return nil
	}
	return &Access{Users: slices.Clone(a.Users), Groups: slices.Clone(a.Groups), UIDs: slices.Clone(a.UIDs),
		GIDs: slices.Clone(a.GIDs), TLSNames: slices.Clone(a.TLSNames)}
}

func latencyFromWire(h *wire.LatencyHistogram) *LatencyHistogram {
	if h == nil {
		return nil
	}
	return &LatencyHistogram{Bounds: slices.Clone(h.Bounds), Counts: slices.Clone(h.Counts), Total: h.Total}
}

// seconds converts seconds with a fraction, as the client protocol carries durations.
func seconds(s float64) time.Duration {
	return time.Duration(math.Round(s * float64(time.Second)))
}
