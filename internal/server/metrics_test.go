package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// scrape is a /metrics page: the label names of each metric's samples, by sample name
// (taskd_x_bucket, taskd_x_count, ...), and each metric family's type, by family name.
type scrape struct {
	text   string
	labels map[string]map[string]bool
	types  map[string]string
}

var labelName = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="`)

func getMetrics(t *testing.T, port int) scrape {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	s := scrape{text: string(body), labels: make(map[string]map[string]bool), types: make(map[string]string)}
	for _, line := range strings.Split(s.text, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			s.types[f[2]] = f[3]
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(line, " ")
		name, lbls, _ := strings.Cut(name, "{")
		if s.labels[name] == nil {
			s.labels[name] = make(map[string]bool)
		}
		if lbls != "" || strings.Contains(rest, "=") {
			for _, m := range labelName.FindAllStringSubmatch(lbls+rest, -1) {
				s.labels[name][m[1]] = true
			}
		}
	}
	return s
}

// family returns the metric family a sample name belongs to: taskd_x for taskd_x_bucket
// of a histogram taskd_x.
func (s scrape) family(sample string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(sample, suffix); ok && (s.types[base] == "histogram" || s.types[base] == "summary") {
			return base
		}
	}
	return sample
}

// busyDaemon starts a daemon serving metrics and makes checkouts and calls of every outcome
// the test worker can produce cheaply: ok, error, timeout (call_timeout), lost (a crash),
// a protocol error (a line over max_message_bytes), and more methods than
// metrics_max_methods labels.
func busyDaemon(t *testing.T) (port int) {
	port = freePort(t)
	d := taskdtest.Start(t, fmt.Sprintf("metrics_listen: \"127.0.0.1:%d\"\nmax_message_bytes: 1KiB\ninterfaces:\n%s", port,
		taskdtest.WorkerYAML("echo", "raw", "min_idle: 1\nmax_workers: 2\ncall_timeout: 300ms\nmetrics_max_methods: 3")))
	c := newClient(t, d, "echo")
	co, err := c.Checkout(ctxT(t))
	require.NoError(t, err)
	require.NoError(t, co.Call(ctxT(t), "echo", nil, "x"))
	var re *client.RemoteError
	require.ErrorAs(t, co.Call(ctxT(t), "fail", nil), &re)
	co.Release()
	assert.Error(t, c.Call(ctxT(t), "sleep", nil, 5000), "call_timeout")
	assert.Error(t, c.Call(ctxT(t), "crash", nil), "worker lost")
	assert.Error(t, c.Call(ctxT(t), "longline", nil, 4000), "protocol error")
	return port
}

// guardedDaemon runs a taskd with a tls:// listener and mTLS, an interface whose allow
// names no one, and a short hello_timeout, and refuses something of each kind: a
// checkout (forbidden), an admin request, a TLS handshake without a client certificate
// and a connection that says nothing. It returns its metrics port.
func guardedDaemon(t *testing.T) (port int) {
	td := startTLSWith(t, "hello_timeout: 1s\n", "", false, echoIface("echo", "allow: {}"))
	c := td.client(t, td.good(t))
	require.ErrorIs(t, c.Call(ctxT(t), "echo", nil), client.ErrForbidden)
	_, err := c.Drain(ctxT(t), "echo")
	require.ErrorIs(t, err, client.ErrNotPermitted)
	_, err = td.client(t, taskdtest.ClientTLS(t, td.CA, "", "")).Ping(ctxT(t))
	require.ErrorIs(t, err, client.ErrUnreachable)
	silent, err := net.Dial("unix", td.Socket)
	require.NoError(t, err)
	defer silent.Close()
	require.NoError(t, silent.SetReadDeadline(time.Now().Add(20*time.Second)))
	_, err = io.Copy(io.Discard, silent) // until taskd closes it: hello_timeout
	require.NoError(t, err)
	return td.MetricsPort
}

// TestMetricsNamesAndLabels: the metrics docs/metrics.md describes are served, with their
// labels, and the method label is bounded by metrics_max_methods.
func TestMetricsNamesAndLabels(t *testing.T) {
	port := busyDaemon(t)
	var s scrape
	require.Eventually(t, func() bool {
		s = getMetrics(t, port)
		return strings.Contains(s.text, `taskd_protocol_errors_total{interface="echo"} 1`) &&
			strings.Contains(s.text, `taskd_checkout_hold_seconds_count{interface="echo"} 4`)
	}, 10*time.Second, 20*time.Millisecond, "the protocol error and every checkout's end counted")
	for name, labels := range map[string][]string{
		"taskd_checkout_wait_seconds_bucket": {"interface", "outcome", "le"},
		"taskd_checkout_hold_seconds_bucket": {"interface", "le"},
		"taskd_call_duration_seconds_bucket": {"interface", "method", "outcome", "le"},
		"taskd_call_duration_seconds_count":  {"interface", "method", "outcome"},
		"taskd_worker_spawn_seconds_bucket":  {"interface", "le"},
		"taskd_calls_total":                  {"interface", "method", "outcome"},
		"taskd_checkouts_total":              {"interface", "outcome"},
		"taskd_worker_exits_total":           {"interface", "reason"},
		"taskd_protocol_errors_total":        {"interface"},
		"taskd_client_connections":           {},
		"taskd_workers":                      {"interface", "state"},
		"go_goroutines":                      {},
		"process_cpu_seconds_total":          {},
	} {
		got, ok := s.labels[name]
		if !assert.True(t, ok, "%s not served", name) {
			continue
		}
		want := map[string]bool{}
		for _, l := range labels {
			want[l] = true
		}
		assert.Equal(t, want, got, "labels of %s", name)
	}
	for _, want := range []string{
		`taskd_calls_total{interface="echo",method="echo",outcome="ok"} 1`,
		`taskd_calls_total{interface="echo",method="fail",outcome="error"} 1`,
		`taskd_calls_total{interface="echo",method="sleep",outcome="timeout"} 1`,
		`taskd_calls_total{interface="echo",method="other",outcome="lost"} 2`, // crash, longline: past 3 methods
		`taskd_call_duration_seconds_count{interface="echo",method="sleep",outcome="timeout"} 1`,
		`taskd_checkouts_total{interface="echo",outcome="granted"} 4`,
		`taskd_checkout_hold_seconds_count{interface="echo"} 4`,
	} {
		assert.Contains(t, s.text, want)
	}
	assert.Regexp(t, `\ntaskd_client_connections [1-9]`, s.text)
	assert.NotContains(t, s.text, `method="crash"`)
}

// TestGrafanaDashboardMetricsExist: every metric that deploy/grafana/taskd.json queries is
// one taskd serves.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(taskdtest.RepoRoot(), "deploy", "grafana", "taskd.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Type    string
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Definition string
			}
		}
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	var exprs []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue // a row of panels: a heading, no query of its own
		}
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	names := map[string]bool{}
	for _, e := range exprs {
		for _, n := range regexp.MustCompile(`\btaskd_[a-z0-9_]+\b`).FindAllString(e, -1) {
			names[n] = true
		}
	}
	require.NotEmpty(t, names)

	// Two daemons between them serve every metric: one busy with calls, one with TLS
	// whose access rules refused something of each kind (labelled series appear once
	// counted).
	scrapes := []scrape{getMetrics(t, busyDaemon(t)), getMetrics(t, guardedDaemon(t))}
	var missing []string
	for n := range names {
		i := slices.IndexFunc(scrapes, func(s scrape) bool { _, ok := s.labels[n]; return ok })
		if i < 0 {
			missing = append(missing, n)
			continue
		}
		if s := scrapes[i]; s.family(n) == n { // not a histogram's _bucket, _sum or _count
			assert.NotEqual(t, "histogram", s.types[n], "%s is a histogram: query its _bucket, _sum or _count", n)
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "metrics the dashboard queries that taskd does not serve")
}
