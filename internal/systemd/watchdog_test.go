package systemd

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/taskd-dev/taskd/internal/server"
)

// fakeWatchdog is a watchdog driven by hand: the test sends its ticks, and its probes are
// a passing "session ping" and a "pool lock" that the test can make fail or hang.
type fakeWatchdog struct {
	w      *Watchdog
	logs   *observer.ObservedLogs
	tick   chan time.Time
	pings  atomic.Int64
	rounds atomic.Int64  // rounds that reached the pool probe
	fail   atomic.Bool   // the pool probe fails
	stall  atomic.Bool   // the pool probe blocks until release is closed (ignoring ctx, as a lock does)
	stuck  chan struct{} // receives when the pool probe begins to block
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
}

func startFakeWatchdog(t *testing.T, release <-chan struct{}) *fakeWatchdog {
	core, logs := observer.New(zapcore.InfoLevel)
	f := &fakeWatchdog{logs: logs, tick: make(chan time.Time), stuck: make(chan struct{}, 1), done: make(chan struct{})}
	f.w = &Watchdog{
		log: zap.New(core),
		probes: []server.Probe{
			{Name: "session ping", Check: func(context.Context) error { return nil }},
			{Name: `pool "x" lock`, Check: func(context.Context) error {
				f.rounds.Add(1)
				if f.stall.Load() {
					f.stuck <- struct{}{}
					<-release
				}
				if f.fail.Load() {
					return errors.New("broken")
				}
				return nil
			}},
		},
		interval: time.Hour, // unused: ticks come from the test
		timeout:  20 * time.Millisecond,
		ping:     func() { f.pings.Add(1) },
		tick:     f.tick,
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		defer close(f.done)
		f.w.run(ctx)
	}()
	t.Cleanup(f.stop)
	return f
}

// stop ends the loop and waits for it.
func (f *fakeWatchdog) stop() {
	f.cancel()
	<-f.done
}

// round sends a tick; the loop has handled it once the next send or stop returns.
func (f *fakeWatchdog) round() { f.tick <- time.Now() }

// tryRound sends a tick if the loop is waiting for one. A tick that comes while a round
// runs starts nothing.
func (f *fakeWatchdog) tryRound() {
	select {
	case f.tick <- time.Now():
	default:
	}
}

// waitPings waits until n pings have been sent.
func (f *fakeWatchdog) waitPings(t *testing.T, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return f.pings.Load() >= n }, 10*time.Second, time.Millisecond,
		"%d pings (have %d)", n, f.pings.Load())
}

func (f *fakeWatchdog) count(msg string) int { return f.logs.FilterMessageSnippet(msg).Len() }

// TestWatchdogPingsAfterPassingRounds: the first round runs at once, and each round that
// passes sends one WATCHDOG=1.
func TestWatchdogPingsAfterPassingRounds(t *testing.T) {
	f := startFakeWatchdog(t, nil)
	f.waitPings(t, 1)
	for i := int64(2); i <= 4; i++ {
		f.round()
		f.waitPings(t, i)
	}
	f.stop()
	assert.Equal(t, int64(4), f.pings.Load())
	assert.Zero(t, f.logs.Len(), "nothing logged while every round passes")
}

// TestWatchdogStalledRoundSendsNoPing: a round stuck in a probe (a wedged pool lock) fails
// when its timeout passes, naming the probe; while it stays stuck no round starts and no
// ping is sent, whatever the ticks; once it returns, the next round pings again. The
// failure and the recovery are logged once each.
func TestWatchdogStalledRoundSendsNoPing(t *testing.T) {
	release := make(chan struct{})
	f := startFakeWatchdog(t, release)
	f.waitPings(t, 1)

	f.stall.Store(true)
	f.round()
	<-f.stuck
	require.Eventually(t, func() bool { return f.count("health check failed") == 1 }, 10*time.Second, time.Millisecond)
	entry := f.logs.FilterMessageSnippet("health check failed").All()[0]
	assert.Equal(t, zapcore.ErrorLevel, entry.Level)
	assert.Contains(t, entry.ContextMap()["error"], `pool "x" lock: did not finish within 20ms`)
	for range 5 {
		f.round() // no round starts while one is stuck
	}
	assert.Equal(t, int64(1), f.pings.Load(), "no WATCHDOG=1 while the round is stuck")
	assert.Equal(t, int64(2), f.rounds.Load(), "no round starts while one is stuck")

	f.stall.Store(false)
	close(release) // the stuck round returns; it is late, so it pings nothing
	require.Eventually(t, func() bool { f.tryRound(); return f.pings.Load() == 2 }, 10*time.Second, time.Millisecond,
		"WATCHDOG=1 again once a round passes")
	f.stop()
	// Every round but the stuck one pings (the last one maybe not: stop drops its result).
	assert.LessOrEqual(t, f.pings.Load(), f.rounds.Load()-1, "the stuck round pings nothing when it returns late")
	assert.Equal(t, 1, f.count("health check failed"), "logged once per failure streak")
	assert.Equal(t, 1, f.count("health checks pass again"))
}

// TestWatchdogFailingRoundsSendNoPing: rounds whose probe fails send no ping, and are
// logged once for the streak with the probe's error; the next passing round pings.
func TestWatchdogFailingRoundsSendNoPing(t *testing.T) {
	f := startFakeWatchdog(t, nil)
	f.waitPings(t, 1)
	f.fail.Store(true)
	require.Eventually(t, func() bool { f.tryRound(); return f.rounds.Load() >= 5 }, 10*time.Second, time.Millisecond)
	f.fail.Store(false)
	assert.Equal(t, int64(1), f.pings.Load(), "no WATCHDOG=1 after failed rounds")
	require.Eventually(t, func() bool { f.tryRound(); return f.pings.Load() == 2 }, 10*time.Second, time.Millisecond)
	f.stop()
	failed := f.logs.FilterMessageSnippet("health check failed").All()
	require.Len(t, failed, 1, "logged once per failure streak")
	assert.Equal(t, `pool "x" lock: broken`, failed[0].ContextMap()["error"])
	assert.Equal(t, 1, f.count("health checks pass again"))
}

// TestWatchdogStopWaitsForTheRound: stopping the loop waits for the round in flight.
func TestWatchdogStopWaitsForTheRound(t *testing.T) {
	release := make(chan struct{})
	f := startFakeWatchdog(t, release)
	f.waitPings(t, 1)
	f.stall.Store(true)
	f.round()
	<-f.stuck
	f.cancel()
	select {
	case <-f.done:
		t.Fatal("run returned while its round was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-f.done
	assert.Equal(t, int64(1), f.pings.Load())
}

// TestWatchdogInterval: WATCHDOG_USEC (for this pid, or any when WATCHDOG_PID is unset)
// gives half of it; unset or for another pid, no watchdog; the variables are unset after.
func TestWatchdogInterval(t *testing.T) {
	tests := []struct {
		name, usec, pid string
		want            time.Duration
		wantErr         string
	}{
		{"unset", "", "", 0, ""},
		{"set", "30000000", "", 15 * time.Second, ""},
		{"our pid", "200000", "self", 100 * time.Millisecond, ""},
		{"another pid", "200000", "1", 0, ""},
		{"bad", "soon", "", 0, "WatchdogSec="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			if tt.pid == "self" {
				tt.pid = strconv.Itoa(os.Getpid())
			}
			t.Setenv("WATCHDOG_PID", tt.pid)
			got, err := WatchdogInterval()
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.want, got)
			_, set := os.LookupEnv("WATCHDOG_USEC")
			assert.False(t, set, "WATCHDOG_USEC is unset")
		})
	}
}
