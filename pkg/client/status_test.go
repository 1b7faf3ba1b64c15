package client

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/taskd-dev/taskd/internal/wire"
)

// TestStatusFromWire checks the conversion of the status report, and that DaemonStatus's
// JSON (what taskctl status -o json prints) is the client protocol's status as it was
// before pkg/client had types of its own.
func TestStatusFromWire(t *testing.T) {
	ws := &wire.Status{Version: "1.2.3", PID: 42, UptimeSec: 3725.4, Draining: true,
		Interfaces: []wire.InterfaceStatus{{
			Name: "passwd", Live: 3, Idle: 1, Busy: 1, Starting: 1, Queued: 4, MinIdle: 1, MaxWorkers: 8,
			Checkouts: 17, Spawns: 5, SpawnFailures: 2, LastError: "exit status 1",
			Retiring: 1, Generation: 3, Exits: map[string]uint64{"max_checkouts": 4, "crashed": 1, "reload": 2},
			Workers: []wire.WorkerStatus{
				{ID: "passwd-1", PID: 4242, State: "busy", Gen: 2, Checkouts: 3, AgeSec: 602.2, Method: "hash", CallSec: 1.234},
				{ID: "passwd-2", PID: 4243, State: "idle", Gen: 3, Checkouts: 14, AgeSec: 0.25},
				{ID: "passwd-3", PID: 4244, State: "warming", Gen: 3},
			},
		}, {Name: "empty", Generation: 1, Removed: true, Workers: []wire.WorkerStatus{}}},
	}
	st := statusFromWire(ws)
	ms := time.Millisecond
	assert.Equal(t, DaemonStatus{Version: "1.2.3", PID: 42, Uptime: 3725400 * ms, Draining: true,
		Interfaces: []InterfaceStatus{{
			Name: "passwd", Live: 3, Idle: 1, Busy: 1, Starting: 1, Queued: 4, MinIdle: 1, MaxWorkers: 8,
			Checkouts: 17, Spawns: 5, SpawnFailures: 2, LastError: "exit status 1",
			Retiring: 1, Generation: 3, Exits: map[string]uint64{ExitMaxCheckouts: 4, ExitCrashed: 1, ExitReload: 2},
			Workers: []WorkerStatus{
				{ID: "passwd-1", PID: 4242, State: "busy", Gen: 2, Checkouts: 3, Age: 602200 * ms, Method: "hash", CallRunning: 1234 * ms},
				{ID: "passwd-2", PID: 4243, State: "idle", Gen: 3, Checkouts: 14, Age: 250 * ms},
				{ID: "passwd-3", PID: 4244, State: "warming", Gen: 3},
			},
		}, {Name: "empty", Generation: 1, Removed: true, Workers: []WorkerStatus{}}},
	}, st)

	want, err := json.Marshal(ws)
	require.NoError(t, err)
	got, err := json.Marshal(st)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))

	var back DaemonStatus
	require.NoError(t, json.Unmarshal(got, &back))
	assert.Equal(t, st, back)
}
