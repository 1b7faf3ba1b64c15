package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/wire"
)

// TestMain clears TASKD_* variables from the environment, so that the tests see only the
// overrides they set themselves.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "TASKD_") {
			os.Unsetenv(k)
		}
	}
	os.Exit(m.Run())
}

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
	cfg, err := loadConfig("../../configs/taskd.yaml")
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
		check func(t *testing.T, c config.Config)
	}{
		{"defaults", minimal, nil, func(t *testing.T, c config.Config) {
			want := config.Config{Interfaces: map[string]config.Interface{"passwd": {
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
    idle_timeout: 1h
`, nil, func(t *testing.T, c config.Config) {
			zero, empty := 0, ""
			assert.Equal(t, config.Config{
				Listen:          []string{"unix:/tmp/t.sock", "tcp://127.0.0.1:7070"},
				SocketMode:      "0600",
				ShutdownGrace:   3 * time.Second,
				MaxMessageBytes: config.MiB,
				MetricsListen:   empty,
				Log:             config.Log{Level: "debug", Format: "console"},
				Interfaces: map[string]config.Interface{"passwd": {
					Command:      []string{"python3", "worker.py"},
					Dir:          "/srv",
					Env:          map[string]string{"PASSWD_COST": "14", "Mixed_Case": "x"},
					MinIdle:      &zero,
					MaxWorkers:   2,
					MaxQueue:     5,
					MaxCheckouts: 100,
					SetupTimeout: 500 * time.Millisecond,
					CallTimeout:  -time.Second,
					IdleTimeout:  time.Hour,
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
		}, func(t *testing.T, c config.Config) {
			assert.Equal(t, []string{"unix:/tmp/a.sock", "tcp://127.0.0.1:1", "unix:/tmp/b.sock"}, c.Listen)
			assert.Equal(t, "0600", c.SocketMode)
			assert.Equal(t, 30*time.Second, c.ShutdownGrace)
			assert.Equal(t, 2*config.MiB, c.MaxMessageBytes)
			assert.Equal(t, "127.0.0.1:9464", c.MetricsListen)
			assert.Equal(t, config.Log{Level: "debug", Format: "console"}, c.Log)
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
		}, func(t *testing.T, c config.Config) {
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
`, map[string]string{"TASKD_INTERFACES_MAIL_SEND_V2_MAX_QUEUE": "7"}, func(t *testing.T, c config.Config) {
			require.Contains(t, c.Interfaces, "Mail.send-v2")
			assert.Equal(t, 7, c.Interfaces["Mail.send-v2"].MaxQueue)
		}},
		{"empty env values are ignored", minimal, map[string]string{"TASKD_LOG_LEVEL": "", "TASKD_LISTEN": ""},
			func(t *testing.T, c config.Config) {
				assert.Equal(t, "info", c.Log.Level)
				assert.Equal(t, []string{wire.DefaultAddr()}, c.Listen)
			}},
		{"unrelated TASKD_ variables are ignored", minimal, map[string]string{"TASKD_ADDR": "unix:/x.sock", "TASKD_NOPE": "1"},
			func(t *testing.T, c config.Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			c, err := loadConfig(writeConfig(t, tt.yaml))
			require.NoError(t, err)
			tt.check(t, c)
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
		{"unknown keys at every level", `
listen: ["unix:/tmp/t.sock"]
listne: ["unix:/tmp/u.sock"]
log: {level: info, colour: true}
interfaces:
  passwd:
    command: [w]
    max_wrokers: 3
    frobnicate: 1
`, nil, []string{
			"unknown key interfaces.passwd.frobnicate",
			"unknown key interfaces.passwd.max_wrokers (did you mean max_workers?)",
			"unknown key listne (did you mean listen?)",
			"unknown key log.colour",
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
`, nil, []string{
			"unknown key bogus",
			"unknown key interfaces.passwd.max_message_bytes",
			`shutdown_grace: duration 10: a bare number is ambiguous — add a unit, such as "10s"`,
			`log: expected a map or struct`,
			`interfaces.passwd.command: got the string "python3 worker.py", want a list`,
			`interfaces.passwd.max_queue: want a whole number, got "lots"`,
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
			"interfaces.passwd.max_workers: 0 is not allowed",
			"interfaces.passwd.setup_timeout: 0 is not allowed: leave the key out to get the default (docs/config.md)",
			"interfaces.passwd.idle_timeout: 0 is not allowed: leave the key out to get the default (docs/config.md), or give a negative value",
			"listen[0]: tcp://0.0.0.0:7000 is not a loopback address; TLS is not supported yet",
		}},
		{"zero from env", minimal, map[string]string{"TASKD_SHUTDOWN_GRACE": "0s"}, []string{
			"shutdown_grace: 0 is not allowed",
		}},
		{"Validate's problems, all of them", `
socket_mode: "0999"
log: {level: loud}
interfaces:
  passwd:
    command: []
    min_idle: 9
  listed-but-empty:
`, nil, []string{
			`socket_mode: "0999" is not an octal file mode`,
			`log.level: "loud" is not one of debug, info, warn, error`,
			`interfaces.listed-but-empty.command: empty — give the worker's argv`,
			`interfaces.passwd.command: empty — give the worker's argv, e.g. ["python3", "worker.py"]`,
			`interfaces.passwd.min_idle: 9 is more than max_workers 8`,
		}},
		{"no interfaces", `listen: ["unix:/tmp/t.sock"]`, nil, []string{"interfaces: none configured"}},
		{"names that differ only in case", `
interfaces:
  passwd: {command: [a]}
  Passwd: {command: [b], env: {X: "1", x: "2"}}
`, nil, []string{
			`interfaces.Passwd.env: "X" and "x" differ only in case`,
			`interfaces: "Passwd" and "passwd" differ only in case`,
		}},
		{"bad list in env", minimal, map[string]string{"TASKD_LISTEN": `["unix:/a.sock"`}, []string{
			`listen (from TASKD_LISTEN): "[\"unix:/a.sock\"" is not a JSON list of strings`,
		}},
		{"bad value in env", minimal, map[string]string{"TASKD_INTERFACES_PASSWD_MAX_WORKERS": "many"}, []string{
			`interfaces.passwd.max_workers: want a whole number, got "many"`,
		}},
		{"not YAML", "interfaces: [\n", nil, []string{"read config:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := loadConfig(writeConfig(t, tt.yaml))
			require.Error(t, err)
			var lines []string
			for _, l := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(l, " ") { // indented lines continue the problem above
					lines = append(lines, l)
				}
			}
			require.Len(t, lines, len(tt.want), "problems:\n%s", err)
			for i, w := range tt.want {
				assert.Contains(t, lines[i], w)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := loadConfig(filepath.Join(t.TempDir(), "nope.yaml"))
		require.ErrorContains(t, err, "read config:")
		require.ErrorIs(t, err, os.ErrNotExist)
	})
}

func TestCheckConfigCommand(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOut string
		wantErr string
	}{
		{"valid", []string{"--check-config", "-c", "GOOD"}, "config OK: 2 interfaces\n", ""},
		{"long flag", []string{"--check-config", "--config", "GOOD"}, "config OK: 2 interfaces\n", ""},
		{"invalid", []string{"--check-config", "-c", "BAD"}, "", "interfaces.passwd.max_workers: must be ≥ 1 (got -1)"},
		{"no file", []string{"--check-config"}, "", "no config file: run taskd -c FILE"},
		{"version", []string{"--version"}, "taskd version dev\n", ""},
		{"stray argument", []string{"-c", "x.yaml", "extra"}, "", "unknown command"},
	}
	bad := writeConfig(t, "interfaces: {passwd: {command: [w], max_workers: -1, min_idle: 0}}")
	good := writeConfig(t, "interfaces: {a: {command: [w]}, b: {command: [w]}}")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			cmd := newCommand(&out)
			for i, a := range tt.args {
				switch a {
				case "BAD":
					tt.args[i] = bad
				case "GOOD":
					tt.args[i] = good
				}
			}
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.wantOut, out.String())
		})
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"max_wrokers", "max_workers", 1},
		{"listne", "listen", 1},
		{"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			assert.Equal(t, tt.want, editDistance(tt.a, tt.b))
			assert.Equal(t, tt.want, editDistance(tt.b, tt.a))
		})
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		key        string
		candidates []string
		want       string
	}{
		{"max_wrokers", []string{"min_idle", "max_workers", "max_queue"}, "max_workers"},
		{"frobnicate", []string{"min_idle", "max_workers", "max_queue"}, ""},
		{"abc", []string{"axx"}, "axx"},          // 2 edits: the most for a 3-letter key
		{"abc", []string{"xyz"}, ""},             // 3 edits: too far
		{"ab", []string{"ay", "ax", "zz"}, "ax"}, // a tie goes to the first in sorted order
		{"lsten", []string{"log", "listen", "lsn"}, "listen"},
		{"x", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			assert.Equal(t, tt.want, suggest(tt.key, tt.candidates))
		})
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a", []string{"a"}},
		{"a,b", []string{"a", "b"}},
		{" a , b\tc\n", []string{"a", "b", "c"}},
		{",,a,,", []string{"a"}},
		{`["a b", "c"]`, []string{"a b", "c"}},
		{` []`, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := splitList(tt.in)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestShippedConfigIsValid keeps configs/taskd.yaml (what make run uses) valid.
func TestShippedConfigIsValid(t *testing.T) {
	var out bytes.Buffer
	cmd := newCommand(&out)
	cmd.SetArgs([]string{"--check-config", "-c", "../../configs/taskd.yaml"})
	require.NoError(t, cmd.Execute())
	assert.Regexp(t, `^config OK: \d+ interfaces\n$`, out.String())
}
