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
			CallLatency: &wire.LatencyHistogram{Bounds: []float64{.001, .01}, Counts: []uint64{3, 5}, Total: 6},
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
			CallLatency: &LatencyHistogram{Bounds: []float64{.001, .01}, Counts: []uint64{3, 5}, Total: 6},
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

func TestLatencyHistogramQuantile(t *testing.T) {
	bounds := []float64{.001, .01, .1}
	h := &LatencyHistogram{Bounds: bounds, Counts: []uint64{50, 99, 100}, Total: 100}
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	q := func(h *LatencyHistogram, q float64, since *LatencyHistogram) time.Duration {
		t.Helper()
		d, ok := h.Quantile(q, since)
		require.True(t, ok)
		return d
	}
	assert.Equal(t, ms(1), q(h, .5, nil))
	assert.Equal(t, ms(10), q(h, .99, nil))
	assert.InDelta(t, float64(ms(1+9*25.0/49)), float64(q(h, .75, nil)), float64(time.Microsecond), "interpolated inside its bucket")

	earlier := &LatencyHistogram{Bounds: bounds, Counts: []uint64{50, 50, 50}, Total: 50}
	assert.InDelta(t, float64(ms(1+9*25.0/49)), float64(q(h, .5, earlier)), float64(time.Microsecond), "only the calls since the earlier snapshot")
	_, ok := h.Quantile(.5, h)
	assert.False(t, ok, "no call in between")
	_, ok = earlier.Quantile(.5, h)
	assert.False(t, ok, "counts went down: taskd restarted")
	_, ok = h.Quantile(.5, &LatencyHistogram{Bounds: bounds[:2], Counts: []uint64{1, 2}, Total: 2})
	assert.False(t, ok, "other buckets")
	_, ok = (*LatencyHistogram)(nil).Quantile(.5, nil)
	assert.False(t, ok)
	_, ok = h.Quantile(1, nil)
	assert.False(t, ok, "q must be inside (0, 1)")

	slow := &LatencyHistogram{Bounds: bounds, Counts: []uint64{0, 0, 0}, Total: 10}
	assert.Equal(t, ms(100), q(slow, .5, nil), "past the last bound: the last bound")
}
