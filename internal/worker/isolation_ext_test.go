package worker_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/sandbox"
	"github.com/taskd-dev/taskd/internal/worker"
)

// statusField returns a field of /proc/PID/status, its white space collapsed.
func statusField(t *testing.T, pid int, name string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	t.Fatalf("no %s in /proc/%d/status", name, pid)
	return ""
}

// TestStartSandboxed: a worker with a Sandbox is started through the helper (this test
// binary, whose TestMain runs sandbox.Main): the worker, at the pid Start reports, has
// the umask, the rlimit and no_new_privs, and speaks the protocol as usual.
func TestStartSandboxed(t *testing.T) {
	umask := uint32(0o077)
	w, _, err := start(t, "raw", func(c *worker.Config) {
		c.Sandbox = sandbox.Spec{Umask: &umask, Rlimits: []sandbox.Rlimit{{Resource: "nofile", Value: 100}}}
	})
	require.NoError(t, err)
	r := call(t, w, "pid")
	require.True(t, r.OK)
	assert.Equal(t, fmt.Sprint(w.Info().PID), string(r.Result))
	assert.Equal(t, "0077", statusField(t, w.Info().PID, "Umask"))
	assert.Equal(t, "1", statusField(t, w.Info().PID, "NoNewPrivs"))
}

// TestStartAsGroupOnly: an Identity without a user (group only) runs the worker as
// taskd's uid with that gid and no supplementary groups, and leaves HOME alone.
func TestStartAsGroupOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root starts workers with another group")
	}
	w, _, err := start(t, "raw", func(c *worker.Config) {
		c.Identity = &worker.Identity{UID: 0, GID: 65534}
	})
	require.NoError(t, err)
	p := w.Info().PID
	assert.Equal(t, "0 0 0 0", statusField(t, p, "Uid"))
	assert.Equal(t, "65534 65534 65534 65534", statusField(t, p, "Gid"))
	assert.Equal(t, "", statusField(t, p, "Groups"), "root's supplementary groups are dropped")
}
