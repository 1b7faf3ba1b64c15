package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/taskdtest"
)

// The floor worker (the lease worker, whose own tests are those of the lease-worker
// rows) answers calls with their arguments, one line per call, and exits on EOF: as a
// pipe worker of the suite, with calls of both payloads.
func TestMinimalWorker(t *testing.T) {
	w, err := startPipeWorker(taskdtest.Binary(t, "internal/taskdtest/leaseworker"), 10*time.Second)
	require.NoError(t, err)
	for _, p := range []string{smallPayload, largePayload, strings.Repeat("x", 200<<10)} {
		args, _ := json.Marshal([]string{p})
		require.NoError(t, w.Call("echo", args))
	}
	require.NoError(t, w.Close(), "exits 0 on EOF")
}
