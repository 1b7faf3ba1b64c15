package conformance_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

func TestMain(m *testing.M) { taskdtest.Main(m) }

// impl is one worker implementation under test.
type impl struct {
	name string
	sdk  bool // serves the SDK part of the method contract (see doc.go)
	// lease: the implementation announces direct leases (docs/worker-protocol.md), so
	// every scenario runs twice: relayed (client.DirectOff) and over direct leases, with
	// one-shot calls on warm leases (name "+direct"). forEach sets direct on the copy it
	// runs. The Perl SDK is relay-only (see sdk/perl/README).
	lease  bool
	direct bool
	// command returns the worker's argv, or skips the test (loudly) when its interpreter
	// is missing.
	command func(t *testing.T) []string
}

// impls is the table of worker implementations: add a row to add one to every scenario.
var impls = []impl{
	{name: "go-sdk", sdk: true, lease: true, command: func(t *testing.T) []string {
		return []string{taskdtest.Binary(t, "internal/conformance/goworker")}
	}},
	{name: "python-raw", command: func(t *testing.T) []string {
		return []string{interpreter(t, "python3"), filepath.Join(taskdtest.RepoRoot(), "examples/raw-python/worker.py")}
	}},
	{name: "python-sdk", sdk: true, lease: true, command: func(t *testing.T) []string {
		return []string{interpreter(t, "python3"), filepath.Join(taskdtest.RepoRoot(), "internal/conformance/workers/python_sdk.py")}
	}},
	{name: "perl-sdk", sdk: true, command: func(t *testing.T) []string {
		return []string{interpreter(t, "perl"), filepath.Join(taskdtest.RepoRoot(), "internal/conformance/workers/perl_sdk.pl")}
	}},
	// The minimal lease-speaking worker: raw protocol v1 plus direct leases, no SDK.
	{name: "go-lease-raw", lease: true, command: func(t *testing.T) []string {
		return []string{taskdtest.Binary(t, "internal/taskdtest/leaseworker")}
	}},
}

// interpreter returns the path of an interpreter, or skips the test, saying so loudly.
func interpreter(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("SKIPPING %s: %s is not installed (CI installs it; see .ci/run)", t.Name(), name)
	}
	return p
}

// forEach runs fn as a subtest for every implementation (or only SDK ones if sdkOnly).
func forEach(t *testing.T, sdkOnly bool, fn func(t *testing.T, im impl)) {
	for _, im := range impls {
		if sdkOnly && !im.sdk {
			continue
		}
		t.Run(im.name, func(t *testing.T) { fn(t, im) })
		if im.lease {
			dim := im
			dim.direct = true
			t.Run(im.name+"+direct", func(t *testing.T) { fn(t, dim) })
		}
	}
}

// modes records, for each daemon that start started, whether its scenario runs over
// direct leases (the impl's mode), for newClient.
var modes sync.Map // *taskdtest.Daemon → client.DirectMode

// modeOf is the client.DirectMode of the scenario that started im's daemon: a row that
// supports leases runs once relayed (DirectOff) and once direct; the others run with the
// default, which relays them anyway.
func modeOf(im impl) client.DirectMode {
	if im.lease && !im.direct {
		return client.DirectOff
	}
	return client.DirectAuto
}

// ifaceYAML is the config of interface name served by im, with extra keys (one per line).
func ifaceYAML(t *testing.T, im impl, name, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n    command: [", name)
	for i, a := range im.command(t) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", a)
	}
	b.WriteString("]\n")
	for _, line := range strings.Split(strings.TrimSpace(extra), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintf(&b, "    %s\n", line)
		}
	}
	return b.String()
}

// start runs a daemon whose interface "w" is served by im, with extra interface keys.
func start(t *testing.T, im impl, extra string) *taskdtest.Daemon {
	t.Helper()
	d := taskdtest.Start(t, "interfaces:\n"+ifaceYAML(t, im, "w", extra))
	modes.Store(d, modeOf(im))
	t.Cleanup(func() { modes.Delete(d) })
	return d
}

// newClient returns a client of interface "w" (or iface) on d, closed at the end of the test.
func newClient(t *testing.T, d *taskdtest.Daemon, mod ...func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{Addr: d.Addr, Interface: "w", Timeout: 20 * time.Second}
	if m, ok := modes.Load(d); ok {
		cfg.Direct = m.(client.DirectMode)
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
