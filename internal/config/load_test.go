package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

const minimal = `
interfaces:
  passwd:
    command: ["bin/passwd-worker"]
    env: {PASSWD_COST: "10"}
`

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "taskd.yaml")
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
	return path
}

func TestLoadExampleConfig(t *testing.T) {
	cfg, err := Load("../../configs/taskd.yaml", nil)
	require.NoError(t, err)
	assert.Equal(t, []string{wire.DefaultAddr()}, cfg.Listen)
	require.Contains(t, cfg.Interfaces, "echo")
	require.Contains(t, cfg.Interfaces, "passwd")
	assert.Equal(t, []string{"bin/echo-worker"}, cfg.Interfaces["echo"].Command)
	assert.Equal(t, map[string]string{"PASSWD_COST": "10"}, cfg.Interfaces["passwd"].Env)
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{"defaults", minimal, nil, func(t *testing.T, c Config) {
			want := Config{Interfaces: map[string]Interface{"passwd": {
				Command: []string{"bin/passwd-worker"},
				Env:     map[string]string{"PASSWD_COST": "10"},
			}}}
			want.Normalize()
			assert.Equal(t, want, c)
		}},
		{"every key from the file", `
listen: ["unix:/tmp/t.sock", "tcp://127.0.0.1:7070"]
socket_mode: "0600"
shutdown_grace: 3s
max_message_bytes: 1MiB
max_line_memory: 8MiB
metrics_listen: ""
log: {level: debug, format: console}
interfaces:
  passwd:
    command: ["python3", "worker.py"]
    dir: /srv
    env: {PASSWD_COST: 14, Mixed_Case: x}
    min_idle: 0
    max_workers: 2
    max_queue: 5
    max_checkouts: 100
    setup_timeout: 500ms
    call_timeout: -1s
    cancel_grace: 0s
    idle_timeout: 1h
    max_age: 6h
    max_rss: 1GiB
    recycle_jitter: 25%
    stderr_line_max: 1KiB
    stderr_rate: 0
    stderr_burst: 50
    metrics_max_methods: 8
`, nil, func(t *testing.T, c Config) {
			zero, empty := 0, ""
			assert.Equal(t, Config{
				Listen:          []string{"unix:/tmp/t.sock", "tcp://127.0.0.1:7070"},
				SocketMode:      "0600",
				ShutdownGrace:   3 * time.Second,
				MaxMessageBytes: MiB,
				MaxLineMemory:   8 * MiB,
				MetricsListen:   empty,
				Log:             Log{Level: "debug", Format: "console"},
				TLS:             TLS{MinVersion: "1.2"},
				MaxClients:      DefaultMaxClients, // access keys: access_test.go
				HelloTimeout:    DefaultHelloTimeout,
				Interfaces: map[string]Interface{"passwd": {
					Command:       []string{"python3", "worker.py"},
					Dir:           "/srv",
					Env:           map[string]string{"PASSWD_COST": "14", "Mixed_Case": "x"},
					MinIdle:       &zero,
					MaxWorkers:    2,
					MaxQueue:      5,
					MaxCheckouts:  100,
					SetupTimeout:  500 * time.Millisecond,
					CallTimeout:   -time.Second,
					CancelGrace:   durp(0),
					IdleTimeout:   time.Hour,
					MaxAge:        6 * time.Hour,
					MaxRSS:        GiB,
					RecycleJitter: pctp(0.25),
					StderrLineMax: sizep(KiB),
					StderrRate:    &zero,
					StderrBurst:   50,

					MetricsMaxMethods: 8,
				}},
			}, c)
		}},
		{"top-level keys from env, not in the file", minimal, map[string]string{
			"TASKD_LISTEN":            "unix:/tmp/a.sock, tcp://127.0.0.1:1  unix:/tmp/b.sock",
			"TASKD_SOCKET_MODE":       "0600",
			"TASKD_SHUTDOWN_GRACE":    "30s",
			"TASKD_MAX_MESSAGE_BYTES": "2MiB",
			"TASKD_METRICS_LISTEN":    "127.0.0.1:9464",
			"TASKD_LOG_LEVEL":         "debug",
			"TASKD_LOG_FORMAT":        "console",
		}, func(t *testing.T, c Config) {
			assert.Equal(t, []string{"unix:/tmp/a.sock", "tcp://127.0.0.1:1", "unix:/tmp/b.sock"}, c.Listen)
			assert.Equal(t, "0600", c.SocketMode)
			assert.Equal(t, 30*time.Second, c.ShutdownGrace)
			assert.Equal(t, 2*MiB, c.MaxMessageBytes)
			assert.Equal(t, "127.0.0.1:9464", c.MetricsListen)
			assert.Equal(t, Log{Level: "debug", Format: "console"}, c.Log)
		}},
		{"env overrides the file", `
listen: ["unix:/tmp/file.sock"]
log: {level: warn}
interfaces:
  passwd:
    command: ["bin/passwd-worker"]
    max_workers: 3
    env: {PASSWD_COST: "10"}
`, map[string]string{
			"TASKD_LISTEN":                            `["unix:/tmp/env one.sock"]`,
			"TASKD_LOG_LEVEL":                         "error",
			"TASKD_INTERFACES_PASSWD_MAX_WORKERS":     "6",
			"TASKD_INTERFACES_PASSWD_MIN_IDLE":        "0",
			"TASKD_INTERFACES_PASSWD_CALL_TIMEOUT":    "-1s",
			"TASKD_INTERFACES_PASSWD_COMMAND":         "python3 -u worker.py",
			"TASKD_INTERFACES_PASSWD_ENV_PASSWD_COST": "12",
		}, func(t *testing.T, c Config) {
			assert.Equal(t, []string{"unix:/tmp/env one.sock"}, c.Listen)
			assert.Equal(t, "error", c.Log.Level)
			p := c.Interfaces["passwd"]
			assert.Equal(t, 6, p.MaxWorkers)
			assert.Equal(t, 0, *p.MinIdle)
			assert.Equal(t, -time.Second, p.CallTimeout)
			assert.Equal(t, []string{"python3", "-u", "worker.py"}, p.Command)
			assert.Equal(t, map[string]string{"PASSWD_COST": "12"}, p.Env)
		}},
		{"interface names keep their case, dots and dashes", `
interfaces:
  Mail.send-v2:
    command: [mailer]
`, map[string]string{"TASKD_INTERFACES_MAIL_SEND_V2_MAX_QUEUE": "7"}, func(t *testing.T, c Config) {
			require.Contains(t, c.Interfaces, "Mail.send-v2")
			assert.Equal(t, 7, c.Interfaces["Mail.send-v2"].MaxQueue)
		}},
		{"empty env values are ignored", minimal, map[string]string{"TASKD_LOG_LEVEL": "", "TASKD_LISTEN": ""},
			func(t *testing.T, c Config) {
				assert.Equal(t, "info", c.Log.Level)
				assert.Equal(t, []string{wire.DefaultAddr()}, c.Listen)
			}},
		{"keys without regard to case; socket_mode as written", `
Socket_Mode: 0600
LOG: {Level: debug}
interfaces:
  passwd: {Command: [w], MAX_WORKERS: 3}
`, nil, func(t *testing.T, c Config) {
			assert.Equal(t, "0600", c.SocketMode)
			assert.Equal(t, "debug", c.Log.Level)
			assert.Equal(t, 3, c.Interfaces["passwd"].MaxWorkers)
		}},
		{"anchors, aliases and merge keys; env changes one interface only", `
interfaces:
  a: &common
    command: [w]
    max_workers: 3
    env: {COST: "1"}
  b:
    <<: *common
    max_workers: 5
  c: *common
`, map[string]string{"TASKD_INTERFACES_C_MAX_QUEUE": "9", "TASKD_INTERFACES_C_ENV_COST": "2"}, func(t *testing.T, c Config) {
			a, b, cc := c.Interfaces["a"], c.Interfaces["b"], c.Interfaces["c"]
			assert.Equal(t, []string{"w"}, b.Command)
			assert.Equal(t, 3, a.MaxWorkers)
			assert.Equal(t, 5, b.MaxWorkers)
			assert.Equal(t, 3, cc.MaxWorkers)
			assert.Equal(t, 9, cc.MaxQueue)
			assert.Equal(t, DefaultMaxQueue, a.MaxQueue)
			assert.Equal(t, map[string]string{"COST": "2"}, cc.Env)
			assert.Equal(t, map[string]string{"COST": "1"}, a.Env)
			assert.Equal(t, map[string]string{"COST": "1"}, b.Env)
		}},
		{"null values are left out", `
metrics_listen: ~
interfaces:
  passwd: {command: [w], max_workers: null, env: {EMPTY: }}
`, nil, func(t *testing.T, c Config) {
			assert.Equal(t, "", c.MetricsListen)
			assert.Equal(t, DefaultMaxWorkers, c.Interfaces["passwd"].MaxWorkers)
			assert.Equal(t, map[string]string{"EMPTY": ""}, c.Interfaces["passwd"].Env)
		}},
		{"unrelated TASKD_ variables are ignored", minimal, map[string]string{"TASKD_ADDR": "unix:/x.sock", "TASKD_NOPE": "1"},
			func(t *testing.T, c Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, tt.yaml), environ(tt.env))
			require.NoError(t, err)
			tt.check(t, *c)
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want []string // one line per problem, in order
	}{
		{"unknown keys at every level, with their lines", `
listen: ["unix:/tmp/t.sock"]
listne: ["unix:/tmp/u.sock"]
log: {level: info, colour: true}
interfaces:
  passwd:
    command: [w]
    max_wrokers: 3
    frobnicate: 1
`, nil, []string{
			"line 3: unknown key listne (did you mean listen?)",
			"line 4: unknown key log.colour",
			"line 8: unknown key interfaces.passwd.max_wrokers (did you mean max_workers?)",
			"line 9: unknown key interfaces.passwd.frobnicate",
		}},
		{"wrong types, reported with unknown keys", `
shutdown_grace: 10
log: info
bogus: 1
interfaces:
  passwd:
    command: python3 worker.py
    max_queue: lots
    max_message_bytes: 1
    env: [A=1]
`, nil, []string{
			`line 2: shutdown_grace: duration 10: a bare number is ambiguous — add a unit, such as "10s"`,
			`line 3: log: want a mapping (key: value lines), got "info"`,
			"line 4: unknown key bogus",
			`line 7: interfaces.passwd.command: got the string "python3 worker.py", want a list`,
			`line 8: interfaces.passwd.max_queue: want a whole number, got "lots"`,
			"line 9: unknown key interfaces.passwd.max_message_bytes",
			"line 10: interfaces.passwd.env: want a mapping (name: value lines), got a list",
		}},
		{"explicit zeros, then Validate's problems", `
listen: ["tcp://0.0.0.0:7000"]
interfaces:
  passwd:
    command: [w]
    max_workers: 0
    idle_timeout: 0s
    setup_timeout: 0s
    max_checkouts: 0
    min_idle: 0
`, nil, []string{
			"line 6: interfaces.passwd.max_workers: 0 is not allowed",
			"line 7: interfaces.passwd.idle_timeout: 0 is not allowed: leave the key out to get the default (docs/config.md), or give a negative value",
			"line 8: interfaces.passwd.setup_timeout: 0 is not allowed: leave the key out to get the default (docs/config.md)",
			"line 2: listen[0]: tcp://0.0.0.0:7000 is not a loopback address: plain TCP is only allowed on loopback",
		}},
		{"zero from env", minimal, map[string]string{"TASKD_SHUTDOWN_GRACE": "0s"}, []string{
			"shutdown_grace (from TASKD_SHUTDOWN_GRACE): 0 is not allowed",
		}},
		{"Validate's problems, all of them, at the line of the key or its interface", `
socket_mode: "0999"
log: {level: loud}
interfaces:
  passwd:
    command: []
    min_idle: 9
  listed-but-empty:
`, nil, []string{
			`line 2: socket_mode: "0999" is not an octal file mode`,
			`line 3: log.level: "loud" is not one of debug, info, warn, error`,
			`line 8: interfaces.listed-but-empty.command: empty — give the worker's argv`,
			`line 6: interfaces.passwd.command: empty — give the worker's argv, e.g. ["python3", "worker.py"]`,
			`line 7: interfaces.passwd.min_idle: 9 is more than max_workers 8`,
		}},
		{"Validate's problem with a value from env", minimal, map[string]string{"TASKD_INTERFACES_PASSWD_MAX_WORKERS": "-1"}, []string{
			"interfaces.passwd.max_workers (from TASKD_INTERFACES_PASSWD_MAX_WORKERS): must be ≥ 1 (got -1)",
		}},
		{"no interfaces", `listen: ["unix:/tmp/t.sock"]`, nil, []string{"interfaces: none configured"}},
		{"empty file", "", nil, []string{"interfaces: none configured"}},
		{"a mapping that merges itself", `
interfaces: &all
  <<: *all
  a:
    <<: *all
    command: [w]
`, nil, []string{"line 4: unknown key interfaces.a.a"}},
		{"names that differ only in case", `
interfaces:
  passwd: {command: [a]}
  Passwd: {command: [b], env: {X: "1", x: "2"}}
`, nil, []string{
			`line 4: interfaces: "passwd" and "Passwd" differ only in case (TASKD_INTERFACES_PASSWD...), so an override could not tell them apart: rename one`,
			`line 4: interfaces.Passwd.env: "X" and "x" differ only in case (TASKD_INTERFACES_PASSWD_ENV_X...)`,
		}},
		{"names with the same variables", `
interfaces:
  mail.send: {command: [a]}
  mail-send: {command: [b]}
`, nil, []string{
			`line 4: interfaces: "mail.send" and "mail-send" would share their TASKD_ variables (TASKD_INTERFACES_MAIL_SEND...)`,
		}},
		{"a key twice", `
interfaces:
  passwd:
    command: [a]
    max_workers: 2
    Max_Workers: 3
  passwd: {command: [b]}
`, nil, []string{
			"line 6: interfaces.passwd.max_workers: given twice (also on line 5): keep one",
			`line 7: interfaces: "passwd" is given twice: keep one`,
		}},
		{"not a mapping", "- listen\n- interfaces\n", nil, []string{"line 1: want a mapping (key: value lines), got a list"}},
		{"bad list in env", minimal, map[string]string{"TASKD_LISTEN": `["unix:/a.sock"`}, []string{
			`listen (from TASKD_LISTEN): "[\"unix:/a.sock\"" is not a JSON list of strings`,
		}},
		{"bad value in env", minimal, map[string]string{"TASKD_INTERFACES_PASSWD_MAX_WORKERS": "many"}, []string{
			`interfaces.passwd.max_workers (from TASKD_INTERFACES_PASSWD_MAX_WORKERS): want a whole number, got "many"`,
		}},
		{"not YAML", "interfaces: [\n", nil, []string{"read config: yaml: line 1:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			_, err := Load(path, environ(tt.env))
			require.Error(t, err)
			first, rest, _ := strings.Cut(err.Error(), "\n")
			assert.Equal(t, "config "+path+":", first)
			var lines []string
			for _, l := range strings.Split(rest, "\n") {
				if !strings.HasPrefix(l, " ") { // indented lines continue the problem above
					lines = append(lines, l)
				}
			}
			require.Len(t, lines, len(tt.want), "problems:\n%s", err)
			for i, w := range tt.want {
				assert.True(t, strings.HasPrefix(lines[i], w), "problem %d:\n got: %s\nwant: %s...", i, lines[i], w)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
		require.ErrorContains(t, err, "read config:")
		require.ErrorIs(t, err, os.ErrNotExist)
	})
}

// environ turns a map into "KEY=value" strings, as os.Environ returns them.
func environ(m map[string]string) []string {
	var env []string
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env
}

func TestEnvVars(t *testing.T) {
	got := envVars([]string{"TASKD_LOG_LEVEL=debug", "PATH=/bin", "TASKD_LOG_LEVEL=warn", "TASKD_LISTEN=", "TASKD_X=a=b", "TASKD_NOVALUE"})
	assert.Equal(t, map[string]string{"TASKD_LOG_LEVEL": "debug", "TASKD_X": "a=b"}, got, "the first of duplicates wins, as with os.Getenv; empty is unset")
}

// FuzzParse checks that no document, however odd, makes the loader panic, and that what
// it accepts is valid.
func FuzzParse(f *testing.F) {
	for _, s := range []string{minimal, "", "~", "- a", "interfaces: {a: &x {command: [w]}, b: *x, c: {<<: [*x, *x]}}",
		"interfaces: {a: {command: [w], env: {A: [1]}, min_idle: {}}}", "log: {<<: {level: info}}", "? [a]\n: b\n",
		"interfaces: &x {a: {<<: *x, command: [w]}, <<: *x}", "a: &a {x: 1}\nb: &b {<<: [*a, *a]}\nc: {<<: [*b, *b]}"} {
		f.Add(s, "TASKD_INTERFACES_A_MAX_WORKERS=2")
	}
	f.Fuzz(func(t *testing.T, doc, env string) {
		cfg, err := parse([]byte(doc), strings.Split(env, "\n"))
		if err == nil {
			require.NoError(t, cfg.Validate())
		}
	})
}
