package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taskd-dev/taskd/internal/wire"
)

// Config is the daemon configuration, as read from YAML (and TASKD_* environment overrides)
// by Load. The zero value of most fields means "use the default"; call Normalize to
// fill defaults and Validate to check it. After Normalize every field holds its effective
// value. A Config is a plain value: it is not modified by the daemon.
type Config struct {
	Listen          []string             `yaml:"listen"`
	SocketMode      string               `yaml:"socket_mode"`
	ShutdownGrace   time.Duration        `yaml:"shutdown_grace"`
	MaxMessageBytes ByteSize             `yaml:"max_message_bytes"`
	MaxLineMemory   ByteSize             `yaml:"max_line_memory"` // 0 = LineMemoryFactor × max_message_bytes
	MetricsListen   string               `yaml:"metrics_listen"`  // "" = off (the default)
	Log             Log                  `yaml:"log"`
	TLS             TLS                  `yaml:"tls"` // for tls:// listeners (tls.go)
	Interfaces      map[string]Interface `yaml:"interfaces"`
	// Who may steer the daemon, and what the limits on client connections are (access.go).
	Admin         *Access       `yaml:"admin"`          // nil: root and taskd's own user only
	HideForbidden bool          `yaml:"hide_forbidden"` // leave interfaces a peer may not use out of what it sees
	MaxClients    int           `yaml:"max_clients"`    // client connections served at once
	HelloTimeout  time.Duration `yaml:"hello_timeout"`  // for a new connection's first request; negative = none
}

// Log configures the daemon's zap logger.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json, console
}

// Interface is one named pool of worker processes.
type Interface struct {
	Command      []string          `yaml:"command"`
	Dir          string            `yaml:"dir"`
	Env          map[string]string `yaml:"env"`
	MinIdle      *int              `yaml:"min_idle"` // nil = default; 0 = none
	MaxWorkers   int               `yaml:"max_workers"`
	MaxQueue     int               `yaml:"max_queue"`
	MaxCheckouts int               `yaml:"max_checkouts"` // 0 = never retire
	SetupTimeout time.Duration     `yaml:"setup_timeout"`
	CallTimeout  time.Duration     `yaml:"call_timeout"` // negative = none
	// CancelGrace: how long a worker whose calls were given up (cancelled) has to answer
	// them before it is killed. nil = default; 0 = kill at once.
	CancelGrace *time.Duration `yaml:"cancel_grace"`
	IdleTimeout time.Duration  `yaml:"idle_timeout"` // negative = never
	// Recycling by age and memory: 0 = never. Each worker gets its own limit, drawn
	// between limit·(1−RecycleJitter) and limit, so that a pool's workers do not all
	// retire at once.
	MaxAge        time.Duration `yaml:"max_age"`
	MaxRSS        ByteSize      `yaml:"max_rss"`
	RecycleJitter *Percent      `yaml:"recycle_jitter"` // nil = default; 0 = none
	// What of a worker's stderr is logged: lines cut at StderrLineMax, StderrRate lines
	// a second per worker with bursts of StderrBurst. nil = default; 0 = no limit.
	StderrLineMax *ByteSize `yaml:"stderr_line_max"`
	StderrRate    *int      `yaml:"stderr_rate"`
	StderrBurst   int       `yaml:"stderr_burst"` // 0 = default: DefaultStderrBurstFactor × StderrRate
	// MetricsMaxMethods bounds the method label of the interface's call metrics: methods
	// past this many distinct ones are counted as "other". 0 = default.
	MetricsMaxMethods int `yaml:"metrics_max_methods"`
	// Who holds what: a checkout held longer than CheckoutWarnAfter, and a call that runs
	// longer than SlowCall, are logged and counted. 0 = off (the default).
	CheckoutWarnAfter time.Duration `yaml:"checkout_warn_after"`
	SlowCall          time.Duration `yaml:"slow_call"`
	// Isolation (isolation.go): whom the workers run as (names or numeric ids; "" =
	// taskd's own), their umask (octal, "" = taskd's) and resource limits.
	User    string  `yaml:"user"`
	Group   string  `yaml:"group"`
	Umask   string  `yaml:"umask"`
	Rlimits Rlimits `yaml:"rlimits"`
	// Cgroup: cgroup v2 limits of the interface's workers (cgroup.go).
	Cgroup Cgroup `yaml:"cgroup"`
	// Allow names the peers that may check out the interface's workers (access.go);
	// nil: anyone who can connect.
	Allow *Access `yaml:"allow"`
	// Direct allows direct leases (docs/worker-protocol.md, "Direct leases"): workers are
	// spawned with a control channel and a stats page, and a local client's checkout of a
	// worker that announces leases gets a socketpair to it. nil = default (true).
	Direct *bool `yaml:"direct"`
}

// DirectOn returns the direct key: its default (true) if it is not set.
func (in Interface) DirectOn() bool { return in.Direct == nil || *in.Direct }

// Defaults filled in by Normalize. docs/config.md lists them too; keep both in step.
const (
	DefaultSocketMode      = "0660"
	DefaultShutdownGrace   = 10 * time.Second
	DefaultMaxMessageBytes = ByteSize(wire.DefaultMaxMessageBytes)
	DefaultLogLevel        = "info"
	// LineMemoryFactor × max_message_bytes is max_line_memory's default: room for that
	// many client lines of the largest size at once.
	LineMemoryFactor = 4
	DefaultLogFormat = "json"

	DefaultDir           = "."
	DefaultMinIdle       = 1
	DefaultMaxWorkers    = 8
	DefaultMaxQueue      = 1000
	DefaultSetupTimeout  = 10 * time.Second
	DefaultCallTimeout   = 60 * time.Second
	DefaultCancelGrace   = time.Second
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultRecycleJitter = Percent(0.10)
	DefaultStderrLineMax = 4 * KiB
	DefaultStderrRate    = 20
	// DefaultStderrBurstFactor × stderr_rate is stderr_burst's default (200 lines at the
	// default rate); with stderr_rate 0 (no limit) it is DefaultStderrBurstFactor ×
	// DefaultStderrRate.
	DefaultStderrBurstFactor = 10
	DefaultMetricsMaxMethods = 32
)

// Limits checked by Validate.
const (
	// MinMessageBytes is the smallest max_message_bytes accepted: every protocol message
	// taskd itself sends must fit.
	MinMessageBytes = 1 * KiB
	// MaxMessageBytes is the largest max_message_bytes accepted (see wire.MaxMessageBytes).
	MaxMessageBytes = ByteSize(wire.MaxMessageBytes)
)

// LogLevels and LogFormats are the values log.level and log.format accept.
var (
	LogLevels  = []string{"debug", "info", "warn", "error"}
	LogFormats = []string{"json", "console"}
)

// ReservedEnv are the variables taskd sets for every worker (after the interface's env,
// so they would win); an interface's env may not name them.
var ReservedEnv = []string{"TASKD_INTERFACE", "TASKD_WORKER_ID", "TASKD_PROTOCOL", "TASKD_MAX_MESSAGE_BYTES"}

var interfaceName = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)

// Normalize replaces every zero value that means "default" with the default, so that after
// it each field holds its effective value. Values that are set, including invalid ones, are
// left alone for Validate to report. Normalize copies the Interfaces map before changing
// it, so a Config that shares its map with another is safe to normalize.
func (c *Config) Normalize() {
	if len(c.Listen) == 0 {
		c.Listen = []string{wire.DefaultAddr()}
	}
	if c.SocketMode == "" {
		c.SocketMode = DefaultSocketMode
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.MaxLineMemory == 0 {
		c.MaxLineMemory = LineMemoryFactor * c.MaxMessageBytes
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
	c.TLS.normalize()
	c.normalizeAccess()
	if c.Interfaces == nil {
		return
	}
	ifaces := make(map[string]Interface, len(c.Interfaces))
	for name, in := range c.Interfaces {
		in.normalize()
		ifaces[name] = in
	}
	c.Interfaces = ifaces
}

// Grace returns cancel_grace: its default if it is not set.
func (in Interface) Grace() time.Duration {
	if in.CancelGrace == nil {
		return DefaultCancelGrace
	}
	return *in.CancelGrace
}

func (in *Interface) normalize() {
	if in.Dir == "" {
		in.Dir = DefaultDir
	}
	if in.MinIdle == nil {
		n := DefaultMinIdle
		in.MinIdle = &n
	}
	if in.MaxWorkers == 0 {
		in.MaxWorkers = DefaultMaxWorkers
	}
	if in.MaxQueue == 0 {
		in.MaxQueue = DefaultMaxQueue
	}
	if in.SetupTimeout == 0 {
		in.SetupTimeout = DefaultSetupTimeout
	}
	if in.CallTimeout == 0 {
		in.CallTimeout = DefaultCallTimeout
	}
	if in.CancelGrace == nil {
		g := DefaultCancelGrace
		in.CancelGrace = &g
	}
	if in.IdleTimeout == 0 {
		in.IdleTimeout = DefaultIdleTimeout
	}
	if in.RecycleJitter == nil {
		j := DefaultRecycleJitter
		in.RecycleJitter = &j
	}
	if in.StderrLineMax == nil {
		n := DefaultStderrLineMax
		in.StderrLineMax = &n
	}
	if in.StderrRate == nil {
		n := DefaultStderrRate
		in.StderrRate = &n
	}
	if in.StderrBurst == 0 {
		in.StderrBurst = DefaultStderrBurstFactor * DefaultStderrRate
		if *in.StderrRate > 0 {
			in.StderrBurst = DefaultStderrBurstFactor * *in.StderrRate
		}
	}
	if in.MetricsMaxMethods == 0 {
		in.MetricsMaxMethods = DefaultMetricsMaxMethods
	}
}

// Validate checks a normalized Config and returns every problem it finds, joined with
// errors.Join, one per line; each names the key path it is about, as in
// "interfaces.passwd.max_workers: must be ≥ 1 (got 0)". It returns nil for a valid Config.
// Zero values that Normalize would replace are reported as errors, so call Normalize first.
func (c Config) Validate() error { return c.validateOn(thisHost()) }

// validateOn is Validate with the isolation keys checked against h.
func (c Config) validateOn(h host) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &problem{key: key, msg: fmt.Sprintf(format, args...)})
	}

	if len(c.Listen) == 0 {
		bad("listen", "no address — give at least one, e.g. [%q]", wire.DefaultAddr())
	}
	seen := make(map[string]int, len(c.Listen))
	for i, s := range c.Listen {
		key := fmt.Sprintf("listen[%d]", i)
		a, err := wire.ParseAddr(s)
		if err != nil {
			bad(key, "%v", err)
			continue
		}
		if j, dup := seen[a.Network+" "+a.Address]; dup { // tcp:// and tls:// on one port too
			bad(key, "%s is already listen[%d]", a, j)
			continue
		}
		seen[a.Network+" "+a.Address] = i
		if !a.IsLoopback() && !a.TLS {
			bad(key, "%s is not a loopback address: plain TCP is only allowed on loopback "+
				"(tcp://127.0.0.1:PORT, tcp://[::1]:PORT, tcp://localhost:PORT); use tls://%s with the tls key to serve other hosts", a, a.Address)
		}
	}
	errs = append(errs, c.validateTLS()...)

	if mode, err := strconv.ParseUint(c.SocketMode, 8, 32); err != nil {
		bad("socket_mode", "%q is not an octal file mode — write it as a quoted string such as \"0660\"", c.SocketMode)
	} else if mode > 0o777 {
		bad("socket_mode", "%q has bits beyond 0777 — give permission bits only, such as \"0660\"", c.SocketMode)
	}

	if c.ShutdownGrace <= 0 {
		bad("shutdown_grace", "must be positive (got %s)", c.ShutdownGrace)
	}
	if c.MaxMessageBytes < MinMessageBytes || c.MaxMessageBytes > MaxMessageBytes {
		bad("max_message_bytes", "must be between %s and %s (got %s)", ByteSize(MinMessageBytes), ByteSize(MaxMessageBytes), c.MaxMessageBytes)
	}
	if c.MaxMessageBytes >= MinMessageBytes && c.MaxMessageBytes <= MaxMessageBytes && c.MaxLineMemory < c.MaxMessageBytes {
		bad("max_line_memory", "must be at least max_message_bytes (%s), or one line of that size could never be read (got %s)", c.MaxMessageBytes, c.MaxLineMemory)
	}
	if c.MetricsListen != "" {
		if _, port, err := net.SplitHostPort(c.MetricsListen); err != nil || port == "" {
			bad("metrics_listen", "%q is not host:port (such as \"127.0.0.1:9464\"); \"\" turns metrics off", c.MetricsListen)
		}
	}

	if !slices.Contains(LogLevels, c.Log.Level) {
		bad("log.level", "%q is not one of %s", c.Log.Level, strings.Join(LogLevels, ", "))
	}
	if !slices.Contains(LogFormats, c.Log.Format) {
		bad("log.format", "%q is not one of %s", c.Log.Format, strings.Join(LogFormats, ", "))
	}
	errs = append(errs, c.validateAccess()...)

	if len(c.Interfaces) == 0 {
		bad("interfaces", "none configured — taskd needs at least one, e.g.\n"+
			"  interfaces:\n    echo:\n      command: [\"bin/echo-worker\"]")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Interfaces)) {
		key := "interfaces." + name
		if !interfaceName.MatchString(name) {
			bad(key, "the name %q may only use letters, digits, '_', '.' and '-'", name)
		}
		errs = append(errs, c.Interfaces[name].validate(key)...)
		errs = append(errs, c.Interfaces[name].validateIsolation(key, h)...)
	}
	return errors.Join(errs...)
}

func (in Interface) validate(prefix string) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &problem{key: prefix + "." + key, msg: fmt.Sprintf(format, args...)})
	}

	switch {
	case len(in.Command) == 0:
		bad("command", `empty — give the worker's argv, e.g. ["python3", "worker.py"]`)
	case in.Command[0] == "":
		bad("command", `the program (first element) is empty — give the worker's argv, e.g. ["python3", "worker.py"]`)
	}
	if in.Dir == "" {
		bad("dir", `empty — give the worker's working directory, e.g. "."`)
	}
	for _, k := range slices.Sorted(maps.Keys(in.Env)) {
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			bad("env", "%q is not a valid environment variable name", k)
		case slices.Contains(ReservedEnv, k):
			bad("env."+k, "is set by taskd for every worker and cannot be configured")
		case strings.ContainsRune(in.Env[k], 0):
			bad("env."+k, "the value contains a NUL byte")
		}
	}
	if in.MaxWorkers < 1 {
		bad("max_workers", "must be ≥ 1 (got %d)", in.MaxWorkers)
	}
	switch {
	case in.MinIdle == nil:
		bad("min_idle", "not set (call Normalize first)")
	case *in.MinIdle < 0:
		bad("min_idle", "must be ≥ 0 (got %d)", *in.MinIdle)
	case in.MaxWorkers >= 1 && *in.MinIdle > in.MaxWorkers:
		bad("min_idle", "%d is more than max_workers %d", *in.MinIdle, in.MaxWorkers)
	}
	if in.MaxQueue < 1 {
		bad("max_queue", "must be ≥ 1 (got %d)", in.MaxQueue)
	}
	if in.MaxCheckouts < 0 {
		bad("max_checkouts", "must be ≥ 0 (got %d); 0 means a worker is never retired for its checkout count", in.MaxCheckouts)
	}
	if in.SetupTimeout <= 0 {
		bad("setup_timeout", "must be positive (got %s)", in.SetupTimeout)
	}
	if in.CallTimeout == 0 {
		bad("call_timeout", "must not be 0 (call Normalize first); a negative value means no timeout")
	}
	switch {
	case in.CancelGrace == nil:
		bad("cancel_grace", "not set (call Normalize first)")
	case *in.CancelGrace < 0:
		bad("cancel_grace", "must be ≥ 0 (got %s); 0 means a worker is killed at once when its call is given up", *in.CancelGrace)
	}
	if in.IdleTimeout == 0 {
		bad("idle_timeout", "must not be 0 (call Normalize first); a negative value means never")
	}
	if in.MaxAge < 0 {
		bad("max_age", "must be ≥ 0 (got %s); 0 means a worker is never retired for its age", in.MaxAge)
	}
	switch {
	case in.RecycleJitter == nil:
		bad("recycle_jitter", "not set (call Normalize first)")
	case *in.RecycleJitter < 0 || *in.RecycleJitter >= 1:
		bad("recycle_jitter", "must be from 0%% to below 100%% (got %s)", *in.RecycleJitter)
	}
	switch {
	case in.StderrLineMax == nil:
		bad("stderr_line_max", "not set (call Normalize first)")
	case *in.StderrLineMax < 0:
		bad("stderr_line_max", "must be ≥ 0 (got %s); 0 means lines are never cut", *in.StderrLineMax)
	}
	switch {
	case in.StderrRate == nil:
		bad("stderr_rate", "not set (call Normalize first)")
	case *in.StderrRate < 0:
		bad("stderr_rate", "must be ≥ 0 lines a second (got %d); 0 means no limit", *in.StderrRate)
	}
	if in.StderrBurst < 1 {
		bad("stderr_burst", "must be ≥ 1 line (got %d)", in.StderrBurst)
	}
	if in.MetricsMaxMethods < 1 {
		bad("metrics_max_methods", "must be ≥ 1 (got %d)", in.MetricsMaxMethods)
	}
	if in.CheckoutWarnAfter < 0 {
		bad("checkout_warn_after", "must be ≥ 0 (got %s); 0 means no warning", in.CheckoutWarnAfter)
	}
	if in.SlowCall < 0 {
		bad("slow_call", "must be ≥ 0 (got %s); 0 means no slow-call log", in.SlowCall)
	}
	errs = append(errs, in.Cgroup.validate(prefix)...)
	errs = append(errs, in.Allow.validate(prefix+".allow")...)
	return errs
}
