package wire

// The answers to the client protocol's read-only requests "status" and "checkouts", as
// the client protocol carries them (client.go has the messages that carry them).

// Status is the daemon's answer to a "status" request, a snapshot for operators, as the
// client protocol carries it. internal/server builds it from the pools' stats, and
// pkg/client converts it to its own DaemonStatus: each in one place.
type Status struct {
	Version    string            `json:"version"`
	PID        int               `json:"pid"`
	UptimeSec  float64           `json:"uptime_sec"`
	Draining   bool              `json:"draining,omitempty"`
	Interfaces []InterfaceStatus `json:"interfaces"`
}

// InterfaceStatus describes one interface's pool.
type InterfaceStatus struct {
	Name          string `json:"name"`
	Live          int    `json:"live"`     // started and not yet reaped, including busy
	Idle          int    `json:"idle"`     // ready and waiting for a checkout
	Busy          int    `json:"busy"`     // checked out
	Starting      int    `json:"starting"` // spawned, not yet ready
	Queued        int    `json:"queued"`   // checkouts waiting for a worker
	MinIdle       int    `json:"min_idle"`
	MaxWorkers    int    `json:"max_workers"`
	Checkouts     uint64 `json:"checkouts"` // checkouts served since start
	Calls         uint64 `json:"calls"`     // calls sent to its workers since start
	Spawns        uint64 `json:"spawns"`
	SpawnFailures uint64 `json:"spawn_failures"`
	LastError     string `json:"last_error,omitempty"`
	Retiring      int    `json:"retiring,omitempty"` // of live: retiring, outside max_workers while they drain
	// Generation counts the reloads that changed what this interface's workers are
	// (command, dir, env): 1 until the first. Each worker reports its own (WorkerStatus.Gen).
	Generation int `json:"generation"`
	// Draining: an admin request drained the interface (refusing new checkouts with
	// interface_draining) and no resume has undone it.
	Draining bool `json:"draining,omitempty"`
	// Removed: a reload removed the interface; its held checkouts finish, then it is gone.
	Removed bool `json:"removed,omitempty"`
	// Exits counts the workers that ended since start, by reason ("max_checkouts",
	// "crashed", ...; see pool.ExitReason); reasons with no exit are left out.
	Exits   map[string]uint64 `json:"exits,omitempty"`
	Workers []WorkerStatus    `json:"workers"`
	// HeldTooLong counts the checkouts held longer than checkout_warn_after, and
	// SlowCalls the calls that ran longer than slow_call, since start.
	HeldTooLong uint64 `json:"held_too_long,omitempty"`
	SlowCalls   uint64 `json:"slow_calls,omitempty"`
	// CallLatency is the histogram of its calls' durations since start (all methods and
	// outcomes, as taskd_call_duration_seconds); absent before the first call.
	CallLatency *LatencyHistogram `json:"call_latency,omitempty"`
	// Allow is the interface's allow rule: who may check it out. Absent: anyone who can
	// connect; present and empty: nobody.
	Allow *Access `json:"allow,omitempty"`
}

// Access is an access rule (the config's allow) as status reports it: a peer is allowed
// if any list names it.
type Access struct {
	Users    []string `json:"users,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	UIDs     []int    `json:"uids,omitempty"`
	GIDs     []int    `json:"gids,omitempty"`
	TLSNames []string `json:"tls_names,omitempty"`
}

// LatencyHistogram is a cumulative histogram of durations: Counts[i] observations took at
// most Bounds[i] seconds, and Total were observed in all (the last bucket, +Inf).
type LatencyHistogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
	Total  uint64    `json:"total"`
}

// WorkerStatus describes one worker process.
type WorkerStatus struct {
	ID        string  `json:"id"`
	PID       int     `json:"pid"`
	State     string  `json:"state"` // idle, busy, retiring, warming (a new generation's, not serving until it takes over)
	Gen       int     `json:"gen"`   // the generation it was started for
	Checkouts int     `json:"checkouts"`
	AgeSec    float64 `json:"age_sec"`
	Method    string  `json:"method,omitempty"`   // the call running now, if any
	CallSec   float64 `json:"call_sec,omitempty"` // how long it has run
	RSS       int64   `json:"rss,omitempty"`      // resident memory in bytes, read at the status request; 0: unknown
}

// CheckoutInfo describes one checkout held now, in the answer to a "checkouts" request.
type CheckoutInfo struct {
	Co        uint64  `json:"co"` // the checkout id
	Interface string  `json:"interface"`
	Worker    string  `json:"worker"`
	PID       int     `json:"pid"` // the worker's
	Holder    Holder  `json:"holder"`
	Once      bool    `json:"once,omitempty"`   // a one-shot call (Client.Call), not a held checkout
	Direct    bool    `json:"direct,omitempty"` // a direct lease: calls go over a socketpair, counted from the stats page
	Warm      bool    `json:"warm,omitempty"`   // a warm lease: kept by the client between its one-shot calls
	HeldSec   float64 `json:"held_sec"`         // since it was granted
	Calls     uint64  `json:"calls"`            // calls made on it so far
	Method    string  `json:"method,omitempty"`
	CallSec   float64 `json:"call_sec,omitempty"` // how long the call running now has run (0: none)
	Warn      bool    `json:"warn,omitempty"`     // held longer than checkout_warn_after
}

// Holder is the client connection that holds a checkout: the name it gave in its hello,
// and what the kernel (unix socket) or the network (TCP) says of it.
type Holder struct {
	Name string `json:"name,omitempty"`
	PID  int    `json:"pid,omitempty"` // 0: unknown (TCP)
	UID  int    `json:"uid"`           // -1: unknown (TCP)
	GID  int    `json:"gid"`           // -1: unknown (TCP)
	Comm string `json:"comm,omitempty"`
	Addr string `json:"addr,omitempty"` // the remote address of a TCP connection

	TLSNames []string `json:"tls_names,omitempty"` // SAN DNS names and URIs of a verified TLS client certificate
}
