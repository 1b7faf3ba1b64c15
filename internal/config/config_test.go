package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

func intp(n int) *int { return &n }

func pctp(p Percent) *Percent { return &p }

func sizep(n ByteSize) *ByteSize          { return &n }
func durp(d time.Duration) *time.Duration { return &d }

// valid returns a normalized, valid Config with one interface, "passwd".
func valid() Config {
	c := Config{Interfaces: map[string]Interface{
		"passwd": {Command: []string{"bin/passwd-worker"}},
	}}
	c.Normalize()
	return c
}

func TestNormalize(t *testing.T) {
	t.Run("fills every default", func(t *testing.T) {
		c := Config{Interfaces: map[string]Interface{"echo": {Command: []string{"echo"}}}}
		c.Normalize()
		assert.Equal(t, Config{
			Listen:          []string{wire.DefaultAddr()},
			SocketMode:      "0660",
			ShutdownGrace:   10 * time.Second,
			MaxMessageBytes: 16 << 20,
			MaxLineMemory:   64 << 20, // 4 × max_message_bytes
			MetricsListen:   "",
			MaxClients:      1024,
			HelloTimeout:    10 * time.Second,
			Log:             Log{Level: "info", Format: "json"},
			TLS:             TLS{MinVersion: "1.2"},
			Interfaces: map[string]Interface{"echo": {
				Command:      []string{"echo"},
				Dir:          ".",
				MinIdle:      intp(1),
				MaxWorkers:   8,
				MaxQueue:     1000,
				SetupTimeout: 10 * time.Second,
				CallTimeout:  60 * time.Second,
				CancelGrace:  durp(time.Second),
				IdleTimeout:  10 * time.Minute,
				// max_age and max_rss: 0, never
				RecycleJitter: pctp(0.1),
				StderrLineMax: sizep(4 * KiB),
				StderrRate:    intp(20),
				StderrBurst:   200,

				MetricsMaxMethods: 32,
			}},
		}, c)
		require.NoError(t, c.Validate())
	})

	t.Run("keeps values that are set", func(t *testing.T) {
		set := Config{
			Listen:          []string{"tcp://127.0.0.1:7000"},
			SocketMode:      "0600",
			ShutdownGrace:   time.Second,
			MaxMessageBytes: 4 * KiB,
			MaxLineMemory:   4 * KiB,
			MetricsListen:   "127.0.0.1:9464",
			Log:             Log{Level: "debug", Format: "console"},
			TLS:             TLS{MinVersion: "1.3"},
			MaxClients:      7, // access keys: access_test.go
			HelloTimeout:    -time.Second,
			Interfaces: map[string]Interface{"x": {
				Command:       []string{"w"},
				Dir:           "/srv",
				Env:           map[string]string{"A": "b"},
				MinIdle:       intp(0),
				MaxWorkers:    2,
				MaxQueue:      3,
				MaxCheckouts:  4,
				SetupTimeout:  time.Second,
				CallTimeout:   -1,
				CancelGrace:   durp(0),
				IdleTimeout:   -time.Second,
				MaxAge:        time.Hour,
				MaxRSS:        512 * MiB,
				RecycleJitter: pctp(0),
				StderrLineMax: sizep(0),
				StderrRate:    intp(0),
				StderrBurst:   5,

				MetricsMaxMethods: 3,
			}},
		}
		c := set
		c.Normalize()
		assert.Equal(t, set, c)
	})

	tests := []struct {
		name  string
		in    Interface
		check func(t *testing.T, in Interface)
	}{
		{"min_idle 0 stays 0", Interface{MinIdle: intp(0)}, func(t *testing.T, in Interface) {
			assert.Equal(t, 0, *in.MinIdle)
		}},
		{"min_idle nil becomes 1", Interface{}, func(t *testing.T, in Interface) {
			assert.Equal(t, 1, *in.MinIdle)
		}},
		{"stderr_burst follows stderr_rate", Interface{StderrRate: intp(7)}, func(t *testing.T, in Interface) {
			assert.Equal(t, 70, in.StderrBurst)
		}},
		{"stderr_burst with no rate limit", Interface{StderrRate: intp(0)}, func(t *testing.T, in Interface) {
			assert.Equal(t, 200, in.StderrBurst)
		}},
		{"negative call_timeout stays negative", Interface{CallTimeout: -time.Second}, func(t *testing.T, in Interface) {
			assert.Equal(t, -time.Second, in.CallTimeout)
		}},
		{"negative idle_timeout stays negative", Interface{IdleTimeout: -1}, func(t *testing.T, in Interface) {
			assert.Equal(t, time.Duration(-1), in.IdleTimeout)
		}},
		{"invalid values are left for Validate", Interface{MaxWorkers: -3, MaxQueue: -1}, func(t *testing.T, in Interface) {
			assert.Equal(t, -3, in.MaxWorkers)
			assert.Equal(t, -1, in.MaxQueue)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Interfaces: map[string]Interface{"i": tt.in}}
			c.Normalize()
			tt.check(t, c.Interfaces["i"])
		})
	}

	t.Run("does not write through a shared Interfaces map", func(t *testing.T) {
		shared := map[string]Interface{"i": {Command: []string{"w"}}}
		c := Config{Interfaces: shared}
		c.Normalize()
		assert.Zero(t, shared["i"].MaxWorkers)
		assert.Equal(t, 8, c.Interfaces["i"].MaxWorkers)
	})

	t.Run("is idempotent", func(t *testing.T) {
		c := valid()
		d := c
		d.Normalize()
		assert.Equal(t, c, d)
	})
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   []string // substrings of the error, one per problem; none = valid
	}{
		{"valid", func(c *Config) {}, nil},
		{"loopback tcp and unix", func(c *Config) {
			c.Listen = []string{"unix:/tmp/a.sock", "tcp://127.0.0.1:1", "tcp://[::1]:2", "tcp://localhost:3"}
		}, nil},
		{"negative timeouts mean none", func(c *Config) {
			in := c.Interfaces["passwd"]
			in.CallTimeout, in.IdleTimeout = -1, -time.Second
			c.Interfaces["passwd"] = in
		}, nil},
		{"min_idle 0 and equal to max_workers", func(c *Config) {
			c.Interfaces["a"] = Interface{Command: []string{"a"}, Dir: ".", MinIdle: intp(0), MaxWorkers: 1, MaxQueue: 1, SetupTimeout: 1, CallTimeout: 1, CancelGrace: durp(1), IdleTimeout: 1, RecycleJitter: pctp(0.1), StderrLineMax: sizep(0), StderrRate: intp(0), StderrBurst: 1, MetricsMaxMethods: 1}
			c.Interfaces["b"] = Interface{Command: []string{"b"}, Dir: ".", MinIdle: intp(2), MaxWorkers: 2, MaxQueue: 1, SetupTimeout: 1, CallTimeout: 1, CancelGrace: durp(1), IdleTimeout: 1, RecycleJitter: pctp(0.1), StderrLineMax: sizep(0), StderrRate: intp(0), StderrBurst: 1, MetricsMaxMethods: 1}
		}, nil},
		{"metrics on", func(c *Config) { c.MetricsListen = "127.0.0.1:9464" }, nil},
		{"interface names", func(c *Config) {
			c.Interfaces["My.iface-2_x"] = c.Interfaces["passwd"]
		}, nil},

		{"no listen", func(c *Config) { c.Listen = nil }, []string{"listen: no address"}},
		{"bad listen", func(c *Config) { c.Listen = []string{"unix:/ok.sock", "localhost:80"} }, []string{
			`listen[1]: address "localhost:80": want unix:`,
		}},
		{"relative unix", func(c *Config) { c.Listen = []string{"unix:taskd.sock"} }, []string{`listen[0]: address "unix:taskd.sock": a unix socket path must be absolute`}},
		{"non-loopback tcp", func(c *Config) { c.Listen = []string{"tcp://0.0.0.0:7000"} }, []string{
			"listen[0]: tcp://0.0.0.0:7000 is not a loopback address: plain TCP is only allowed on loopback",
		}},
		{"duplicate listen", func(c *Config) { c.Listen = []string{"unix:/a.sock", "unix:///a.sock"} }, []string{
			"listen[1]: unix:/a.sock is already listen[0]",
		}},
		{"socket_mode not octal", func(c *Config) { c.SocketMode = "rw-rw----" }, []string{`socket_mode: "rw-rw----" is not an octal`}},
		{"socket_mode decimal digits", func(c *Config) { c.SocketMode = "0689" }, []string{`socket_mode: "0689" is not an octal`}},
		{"socket_mode too big", func(c *Config) { c.SocketMode = "01777" }, []string{`socket_mode: "01777" has bits beyond 0777`}},
		{"shutdown_grace negative", func(c *Config) { c.ShutdownGrace = -time.Second }, []string{"shutdown_grace: must be positive (got -1s)"}},
		{"max_message_bytes small", func(c *Config) { c.MaxMessageBytes = 10 }, []string{"max_message_bytes: must be between 1KiB and 1GiB (got 10B)"}},
		{"max_message_bytes big", func(c *Config) { c.MaxMessageBytes = 2 * GiB }, []string{"max_message_bytes: must be between 1KiB and 1GiB (got 2GiB)"}},
		{"max_line_memory below max_message_bytes", func(c *Config) { c.MaxLineMemory = MiB }, []string{"max_line_memory: must be at least max_message_bytes (16MiB), or one line of that size could never be read (got 1MiB)"}},
		{"metrics_listen", func(c *Config) { c.MetricsListen = "9464" }, []string{`metrics_listen: "9464" is not host:port`}},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, []string{`log.level: "verbose" is not one of debug, info, warn, error`}},
		{"log format", func(c *Config) { c.Log.Format = "text" }, []string{`log.format: "text" is not one of json, console`}},
		{"no interfaces", func(c *Config) { c.Interfaces = nil }, []string{"interfaces: none configured"}},
		{"bad interface name", func(c *Config) { c.Interfaces["pass wd"] = c.Interfaces["passwd"] }, []string{
			`interfaces.pass wd: the name "pass wd" may only use letters`,
		}},
		{"empty command", func(c *Config) { setIface(c, func(in *Interface) { in.Command = nil }) }, []string{
			`interfaces.passwd.command: empty — give the worker's argv, e.g. ["python3", "worker.py"]`,
		}},
		{"empty program", func(c *Config) { setIface(c, func(in *Interface) { in.Command = []string{"", "x"} }) }, []string{
			`interfaces.passwd.command: the program (first element) is empty`,
		}},
		{"empty dir", func(c *Config) { setIface(c, func(in *Interface) { in.Dir = "" }) }, []string{"interfaces.passwd.dir: empty"}},
		{"env", func(c *Config) {
			setIface(c, func(in *Interface) {
				in.Env = map[string]string{"A=B": "", "TASKD_WORKER_ID": "1", "TASKD_MAX_MESSAGE_BYTES": "1MiB", "X": "a\x00b", "OK": "fine"}
			})
		}, []string{
			`interfaces.passwd.env: "A=B" is not a valid environment variable name`,
			"interfaces.passwd.env.TASKD_MAX_MESSAGE_BYTES: is set by taskd",
			"interfaces.passwd.env.TASKD_WORKER_ID: is set by taskd",
			"interfaces.passwd.env.X: the value contains a NUL byte",
		}},
		{"max_workers 0", func(c *Config) { setIface(c, func(in *Interface) { in.MaxWorkers = 0 }) }, []string{
			"interfaces.passwd.max_workers: must be ≥ 1 (got 0)",
		}},
		{"min_idle above max_workers", func(c *Config) { setIface(c, func(in *Interface) { in.MinIdle = intp(9) }) }, []string{
			"interfaces.passwd.min_idle: 9 is more than max_workers 8",
		}},
		{"min_idle negative", func(c *Config) { setIface(c, func(in *Interface) { in.MinIdle = intp(-1) }) }, []string{
			"interfaces.passwd.min_idle: must be ≥ 0 (got -1)",
		}},
		{"min_idle not normalized", func(c *Config) { setIface(c, func(in *Interface) { in.MinIdle = nil }) }, []string{
			"interfaces.passwd.min_idle: not set",
		}},
		{"counts", func(c *Config) {
			setIface(c, func(in *Interface) { in.MaxQueue, in.MaxCheckouts = -1, -1 })
		}, []string{
			"interfaces.passwd.max_queue: must be ≥ 1 (got -1)",
			"interfaces.passwd.max_checkouts: must be ≥ 0 (got -1)",
		}},
		{"recycling", func(c *Config) {
			setIface(c, func(in *Interface) { in.MaxAge, in.RecycleJitter = -time.Second, pctp(1) })
		}, []string{
			"interfaces.passwd.max_age: must be ≥ 0 (got -1s)",
			"interfaces.passwd.recycle_jitter: must be from 0% to below 100% (got 100%)",
		}},
		{"stderr limits", func(c *Config) {
			setIface(c, func(in *Interface) { in.StderrLineMax, in.StderrRate, in.StderrBurst = sizep(-1), intp(-1), 0 })
		}, []string{
			"interfaces.passwd.stderr_line_max: must be ≥ 0",
			"interfaces.passwd.stderr_rate: must be ≥ 0 lines a second (got -1)",
			"interfaces.passwd.stderr_burst: must be ≥ 1 line (got 0)",
		}},
		{"metrics_max_methods", func(c *Config) { setIface(c, func(in *Interface) { in.MetricsMaxMethods = -1 }) }, []string{
			"interfaces.passwd.metrics_max_methods: must be ≥ 1 (got -1)",
		}},
		{"recycle_jitter not normalized", func(c *Config) { setIface(c, func(in *Interface) { in.RecycleJitter = nil }) }, []string{
			"interfaces.passwd.recycle_jitter: not set",
		}},
		{"timeouts", func(c *Config) {
			setIface(c, func(in *Interface) {
				in.SetupTimeout, in.CallTimeout, in.IdleTimeout, in.CancelGrace = -1, 0, 0, durp(-time.Second)
			})
		}, []string{
			"interfaces.passwd.setup_timeout: must be positive (got -1ns)",
			"interfaces.passwd.call_timeout: must not be 0",
			"interfaces.passwd.cancel_grace: must be ≥ 0 (got -1s)",
			"interfaces.passwd.idle_timeout: must not be 0",
		}},
		{"cancel_grace not normalized", func(c *Config) { setIface(c, func(in *Interface) { in.CancelGrace = nil }) }, []string{
			"interfaces.passwd.cancel_grace: not set",
		}},
		{"all problems at once, in key order", func(c *Config) {
			c.Log.Level = "loud"
			c.Interfaces["b"] = Interface{Command: []string{"b"}, Dir: ".", MinIdle: intp(0), MaxWorkers: 0, MaxQueue: 1, SetupTimeout: 1, CallTimeout: 1, CancelGrace: durp(1), IdleTimeout: 1, RecycleJitter: pctp(0.1), StderrLineMax: sizep(0), StderrRate: intp(0), StderrBurst: 1, MetricsMaxMethods: 1}
			setIface(c, func(in *Interface) { in.Command = nil })
		}, []string{
			"log.level:",
			"interfaces.b.max_workers: must be ≥ 1 (got 0)",
			"interfaces.passwd.command: empty",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			lines := strings.Split(err.Error(), "\n")
			var problems []string // continuation lines (indented examples) belong to the problem above
			for _, l := range lines {
				if strings.HasPrefix(l, " ") && len(problems) > 0 {
					continue
				}
				problems = append(problems, l)
			}
			require.Len(t, problems, len(tt.want), "problems:\n%s", err)
			for i, w := range tt.want {
				assert.Contains(t, problems[i], w)
			}
		})
	}
}

func setIface(c *Config, f func(in *Interface)) {
	in := c.Interfaces["passwd"]
	f(&in)
	c.Interfaces["passwd"] = in
}
