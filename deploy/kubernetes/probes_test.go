package kubernetes_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yamlv3 "go.yaml.in/yaml/v3"

	"github.com/taskd-dev/taskd/internal/taskdtest"
	"github.com/taskd-dev/taskd/pkg/client"
)

// runProbes starts the real taskd on the pod's config (its listen and log replaced by the
// test daemon's, the programs by the ones built from this checkout, the TLS files by a
// test CA's, metrics on a free loopback port), and runs the pod's probe and preStop
// commands as the kubelet would: liveness and readiness pass once the workers are up; the
// preStop hook waits for a held checkout, drains, and leaves the pod unready but alive;
// then taskd stops on SIGTERM within the grace period.
func runProbes(t *testing.T, p *podFacts) {
	var doc yamlv3.Node
	require.NoError(t, yamlv3.Unmarshal([]byte(p.rawConfig), &doc))
	m := doc.Content[0]
	m.Content = slices.Collect(func(yield func(*yamlv3.Node) bool) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if k := m.Content[i].Value; k != "listen" && k != "log" { // taskdtest sets both
				_ = yield(m.Content[i]) && yield(m.Content[i+1])
			}
		}
	})
	yml, err := yamlv3.Marshal(m)
	require.NoError(t, err)

	env := append(slices.Clone(p.env), "TASKD_METRICS_LISTEN=127.0.0.1:0")
	var iface string
	for name, in := range p.cfg.Interfaces {
		cmd, err := json.Marshal(append([]string{taskdtest.Binary(t, imageFiles[in.Command[0]])}, in.Command[1:]...))
		require.NoError(t, err)
		env = append(env, "TASKD_INTERFACES_"+envWord(name)+"_COMMAND="+string(cmd))
		iface = name
	}
	d := taskdtest.StartWith(t, string(yml), taskdtest.Options{Wait: true, Env: env})

	// run runs a probe or hook command (the image's path mapped to this checkout's binary)
	// with the container's TASKD_ADDR pointed at the test daemon.
	run := func(argv []string, timeout time.Duration) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, taskdtest.Binary(t, imageFiles[argv[0]]), argv[1:]...)
		cmd.Env = append(os.Environ(), "TASKD_ADDR="+d.Addr)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &ee) && ctx.Err() == nil:
			return ee.ExitCode(), string(out)
		}
		t.Fatalf("%v: %v (%v)\n%s", argv, err, ctx.Err(), out)
		return 0, ""
	}
	probeTimeout := func(seconds int32) time.Duration { return time.Duration(max(seconds, 1)) * time.Second }
	live, ready := p.taskd.LivenessProbe, p.taskd.ReadinessProbe
	liveness := func() (int, string) { return run(live.Exec.Command, probeTimeout(live.TimeoutSeconds)) }
	readiness := func() (int, string) { return run(ready.Exec.Command, probeTimeout(ready.TimeoutSeconds)) }

	code, out := liveness()
	require.Equal(t, 0, code, "liveness: %s", out)
	require.Eventually(t, func() bool { code, _ := readiness(); return code == 0 }, 30*time.Second, 100*time.Millisecond,
		"readiness never passed")
	_, out = readiness()
	t.Logf("readiness: %s", strings.TrimSpace(out))

	if len(p.preStop) > 0 {
		c, err := client.New(client.Config{Addr: d.Addr, Interface: iface, Timeout: 10 * time.Second})
		require.NoError(t, err)
		defer c.Close()
		co, err := c.Checkout(context.Background())
		require.NoError(t, err)
		const hold = 500 * time.Millisecond
		release := time.AfterFunc(hold, co.Release)
		defer release.Stop()
		start := time.Now()
		code, out := run(p.preStop, p.grace)
		took := time.Since(start)
		t.Logf("preStop took %v:\n%s", took.Round(time.Millisecond), out)
		require.Equal(t, 0, code, "preStop: %s", out)
		assert.Contains(t, out, "drained")
		assert.Contains(t, out, "no checkout held after", "the preStop hook waits for the held checkout")
		assert.GreaterOrEqual(t, took, hold, "the preStop hook returned while a checkout was held")
		assert.Less(t, took, p.wait, "the preStop hook waited past the checkout's release")

		code, out = readiness()
		assert.Equal(t, 1, code, "a drained pod is not ready: %s", out)
		assert.Contains(t, out, "drained")
		code, out = liveness()
		assert.Equal(t, 0, code, "a drained pod is still alive: %s", out)
		_, err = c.Checkout(context.Background())
		assert.ErrorIs(t, err, client.ErrDraining, "a drained pod refuses new checkouts, so that clients go elsewhere")
	}

	start := time.Now()
	require.NoError(t, d.Stop(p.grace), "taskd did not stop cleanly on SIGTERM within terminationGracePeriodSeconds")
	t.Logf("SIGTERM to exit: %v", time.Since(start).Round(time.Millisecond))
}

// envWord is how taskd names a config key in a TASKD_ variable (docs/config.md).
func envWord(s string) string {
	return strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(s))
}
