package taskdtest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/taskd-dev/taskd/pkg/worker"
)

// Config describes the daemon that Start runs: its interfaces, and any other top-level
// keys of taskd's config file. The zero value of every field but Interfaces means
// "taskd's default" (or the test server's, where this says so). Start reads a Config once
// and keeps no reference to it.
type Config struct {
	// Interfaces are the pools the daemon serves, by name (the name a client.Config's
	// Interface gives). At least one is required.
	Interfaces map[string]Interface

	// YAML holds more top-level keys of taskd's config file (docs/config.md), as YAML:
	// "shutdown_grace: 3s\nmax_message_bytes: 1MiB". It may not set listen (the test
	// server picks a socket) or interfaces (use Interfaces). Unlike the daemon, the test
	// server defaults shutdown_grace to 1s, so that a test with a checkout still held ends
	// quickly, and serves no metrics unless metrics_listen is set. log.level applies to
	// the log that Server.Logs returns (info by default); log.format is ignored.
	YAML string
}

// Interface is one interface of the test server: either an external worker program
// (Command) or Go methods run in a worker process that is this test binary (Worker).
type Interface struct {
	// Command is the worker's argv, as the command key of the config file takes it:
	// an executable (a path, or a name looked up in $PATH) and its arguments.
	Command []string

	// Worker is a Go worker served by this test binary: taskd starts the binary again
	// as the worker process, running only the current test (or example) up to the same
	// Start or New call, which serves Worker with worker.Run instead of starting a
	// daemon (see the package documentation). Give Methods or Default (and Setup,
	// CheckoutDone or Logger as a worker's main would).
	Worker worker.Spec

	// Env is the worker's environment: the env key. A Command worker gets only these
	// variables, PATH, HOME, LANG, LC_ALL, LC_CTYPE, TZ and TMPDIR of the test process,
	// and taskd's TASKD_* variables, as under the daemon. A Go interface's worker
	// process also inherits the rest of the test process's environment (but its TASKD_*
	// variables), so that it takes the same path through the test (a test that skips
	// unless a variable is set, say); Env overrides it.
	Env map[string]string

	// Dir is the worker's working directory (the dir key); relative to the test's
	// working directory, which go test makes the package's directory. Default ".".
	Dir string

	// YAML holds more keys of the interface (docs/config.md), as YAML:
	// "max_workers: 2\ncall_timeout: 5s". It may not set command, env or dir (use the
	// fields above).
	YAML string
}

// isGo reports whether the interface is served by Go methods (Worker).
func (in Interface) isGo() bool {
	w := in.Worker
	return len(w.Methods) > 0 || w.Default != nil || w.Setup != nil || w.CheckoutDone != nil || w.Logger != nil
}

// Environment variables of the test server's workers.
const (
	// serverEnv is in every worker's environment: the id of its test server, by which
	// Close finds a worker process that outlived the daemon.
	serverEnv = "TASKDTEST_SERVER"
	// workerEnv and runEnv make a Go worker's process serve interface workerEnv of the
	// first Start or New of test runEnv that has it.
	workerEnv = "TASKDTEST_WORKER"
	runEnv    = "TASKDTEST_RUN"
)

// testDefaults are top-level keys whose default differs for a test server; a key given
// in Config.YAML wins.
var testDefaults = []struct{ key, value string }{
	{"shutdown_grace", "1s"},
	{"metrics_listen", ""},
}

// reexec is how a Go interface's worker process is started: argv runs this test binary
// again, limited to the test (or example) named run, which makes the same Start or New
// call (goworker.go).
type reexec struct {
	argv []string
	run  string
}

// build is what buildYAML needs besides the Config.
type build struct {
	addr string  // where the daemon listens
	id   string  // the test server's id (serverEnv)
	re   *reexec // starts Go interfaces; nil if they cannot be served here, with why
	why  error
	// environ is the test process's environment, which Go interfaces inherit (see
	// inherited); redact replaces those values with a placeholder, for a config quoted
	// in an error (the lines stay the same).
	environ []string
	redact  bool
}

// inherited returns the variables of environ that a Go interface's worker process gets:
// all but taskd's (TASKD_*) and this package's own, and systemd's notify and
// socket-activation variables. With them, the worker process takes the same path through the test as the
// test did (a test that skips unless a variable is set, say).
func (b build) inherited() map[string]string {
	env := map[string]string{}
	for _, kv := range b.environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.HasPrefix(k, "TASKD_") || k == serverEnv || k == workerEnv || k == runEnv ||
			k == "NOTIFY_SOCKET" || strings.HasPrefix(k, "LISTEN_") {
			continue
		}
		if b.redact {
			v = "(from the test's environment)"
		}
		env[k] = v
	}
	return env
}

// buildYAML returns taskd's config file for cfg, as b says.
func buildYAML(cfg Config, b build) ([]byte, error) {
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("taskdtest: Config.Interfaces is empty: give at least one interface, with a Command or a Worker")
	}
	top, err := snippet("Config.YAML", cfg.YAML, map[string]string{
		"listen":     "the test server listens on a socket of its own (Server.Addr)",
		"interfaces": "give interfaces in Config.Interfaces",
	})
	if err != nil {
		return nil, err
	}
	doc := mapping()
	add(doc, "listen", []string{b.addr})
	for _, d := range testDefaults {
		if !has(top, d.key) {
			add(doc, d.key, d.value)
		}
	}
	doc.Content = append(doc.Content, top.Content...)
	ifaces := mapping()
	for _, name := range slices.Sorted(maps.Keys(cfg.Interfaces)) {
		in := cfg.Interfaces[name]
		n, err := interfaceNode(name, in, b)
		if err != nil {
			return nil, err
		}
		ifaces.Content = append(ifaces.Content, scalar(name), n)
	}
	doc.Content = append(doc.Content, scalar("interfaces"), ifaces)
	return yaml.Marshal(doc)
}

// interfaceNode is the config of one interface.
func interfaceNode(name string, in Interface, b build) (*yaml.Node, error) {
	what := fmt.Sprintf("Config.Interfaces[%q]", name)
	env := map[string]string{}
	command := in.Command
	switch {
	case in.isGo() && len(in.Command) > 0:
		return nil, fmt.Errorf("taskdtest: %s has both a Command and a Worker: give one", what)
	case in.isGo():
		if len(in.Worker.Methods) == 0 && in.Worker.Default == nil {
			return nil, fmt.Errorf("taskdtest: %s.Worker has neither Methods nor Default: give it something to call", what)
		}
		if b.re == nil {
			return nil, fmt.Errorf("taskdtest: %s is a Go interface (Worker), which %w", what, b.why)
		}
		command = b.re.argv
		env = b.inherited()
		// A race-enabled binary otherwise sleeps a second at exit: every worker exit
		// would look slow.
		env["GORACE"] = strings.TrimSpace(env["GORACE"] + " atexit_sleep_ms=0")
	case len(in.Command) == 0:
		return nil, fmt.Errorf("taskdtest: %s has neither a Command nor a Worker: give the worker's argv in Command, or Go methods in Worker", what)
	}
	for k, v := range in.Env {
		if k == serverEnv || k == workerEnv || k == runEnv {
			return nil, fmt.Errorf("taskdtest: %s.Env sets %s, which the test server sets itself: use another name", what, k)
		}
		env[k] = v
	}
	env[serverEnv] = b.id
	if in.isGo() {
		env[workerEnv] = name
		env[runEnv] = b.re.run
	}
	extra, err := snippet(what+".YAML", in.YAML, map[string]string{
		"command": "use " + what + ".Command (or .Worker)",
		"env":     "use " + what + ".Env",
		"dir":     "use " + what + ".Dir",
	})
	if err != nil {
		return nil, err
	}
	n := mapping()
	add(n, "command", command)
	if in.Dir != "" {
		add(n, "dir", in.Dir)
	}
	add(n, "env", env)
	n.Content = append(n.Content, extra.Content...)
	return n, nil
}

// snippet parses a YAML snippet that must be a mapping (or empty) and must not set any
// of the keys in reserved (key → what to do instead).
func snippet(what, src string, reserved map[string]string) (*yaml.Node, error) {
	if strings.TrimSpace(src) == "" {
		return mapping(), nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		return nil, fmt.Errorf("taskdtest: %s is not valid YAML: %w", what, err)
	}
	if len(doc.Content) == 0 {
		return mapping(), nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("taskdtest: %s must be YAML keys and values (\"key: value\" lines), such as \"max_workers: 2\"", what)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if why, ok := reserved[m.Content[i].Value]; ok {
			return nil, fmt.Errorf("taskdtest: %s sets %s: %s", what, m.Content[i].Value, why)
		}
	}
	return m, nil
}

func has(m *yaml.Node, key string) bool {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return true
		}
	}
	return false
}

func mapping() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"} }

func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}

// add appends key: v to mapping m; v is a string, a []string or a map[string]string,
// always written as quoted strings.
func add(m *yaml.Node, key string, v any) {
	var n *yaml.Node
	switch v := v.(type) {
	case string:
		n = scalar(v)
	case []string:
		n = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle}
		for _, s := range v {
			n.Content = append(n.Content, scalar(s))
		}
	case map[string]string:
		n = mapping()
		for _, k := range slices.Sorted(maps.Keys(v)) {
			n.Content = append(n.Content, scalar(k), scalar(v[k]))
		}
	}
	m.Content = append(m.Content, scalar(key), n)
}
