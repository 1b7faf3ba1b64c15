package systemd

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/server"
)

// WatchdogInterval reads systemd's watchdog settings (WATCHDOG_USEC, and WATCHDOG_PID,
// which must be taskd's pid if set; both set by the unit's WatchdogSec=) and unsets them.
// It returns how often to feed the watchdog, half of WATCHDOG_USEC, or 0 when there is no
// watchdog to feed.
func WatchdogInterval() (time.Duration, error) {
	usec, err := daemon.SdWatchdogEnabled(true)
	if err != nil {
		return 0, fmt.Errorf("systemd watchdog: %w; WatchdogSec= in the unit sets WATCHDOG_USEC (and WATCHDOG_PID): fix or unset them", err)
	}
	return usec / 2, nil
}

// watchdog feeds systemd's watchdog (WATCHDOG=1) only while the daemon proves that it
// still works: every interval it runs a round of health checks (the probes, in order),
// and pings after a round that passes within timeout. A round that fails, or does not
// finish in time, sends nothing — systemd then kills and restarts taskd once WatchdogSec
// passes without a ping — and is logged once per streak of failed rounds, with the probe
// that failed or hung; the first round that passes again is logged too.
//
// The loop (run) is owned by whoever calls it: it returns once ctx has ended and the round
// in flight, if any, has returned. It starts at most one round at a time, on a goroutine
// of its own, so that a round stuck on a wedged lock cannot stop the loop from noticing
// the timeout; while that round is stuck, no other starts and nothing is sent.
type Watchdog struct {
	log      *zap.Logger
	probes   []server.Probe
	interval time.Duration    // between the starts of rounds
	timeout  time.Duration    // a round that takes longer fails
	ping     func()           // sends WATCHDOG=1
	tick     <-chan time.Time // if set, replaces the interval's ticker (tests)
}

// watch runs w.run on a goroutine that n.wait waits for.
func (n *Notifier) Watch(ctx context.Context, w *Watchdog) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		w.run(ctx)
	}()
}

// roundTimeout is the time a round of health checks is given: half the time between
// rounds, so that a round that passes late still pings well before systemd's deadline.
func roundTimeout(interval time.Duration) time.Duration { return interval / 2 }

// NewWatchdog returns a watchdog that runs probes every interval (see WatchdogInterval)
// and calls ping (which sends WATCHDOG=1) after each round that passes in time. Start it
// with Notifier.Watch.
func NewWatchdog(log *zap.Logger, probes []server.Probe, interval time.Duration, ping func()) *Watchdog {
	return &Watchdog{log: log, probes: probes, interval: interval, timeout: roundTimeout(interval), ping: ping}
}

// roundStart is where a round is before its first probe runs.
var roundStart = "starting the round"

// run runs rounds, the first at once, until ctx ends.
func (w *Watchdog) run(ctx context.Context) {
	tick := w.tick
	if tick == nil {
		t := time.NewTicker(w.interval)
		defer t.Stop()
		tick = t.C
	}
	var (
		done     chan error       // the round in flight; nil when none
		expired  <-chan time.Time // its timeout
		timer    *time.Timer
		at       atomic.Pointer[string] // the probe the round is running
		late     bool                   // the round in flight has failed already (timeout)
		failures int                    // rounds failed in a row
	)
	start := func() {
		at.Store(&roundStart)
		done, late = make(chan error, 1), false
		timer = time.NewTimer(w.timeout)
		expired = timer.C
		rctx, cancel := context.WithTimeout(ctx, w.timeout)
		go func(done chan<- error) {
			defer cancel()
			done <- w.round(rctx, &at)
		}(done)
	}
	result := func(err error) {
		switch {
		case err == nil && failures > 0:
			w.log.Info("systemd watchdog: health checks pass again; WATCHDOG=1 resumes", zap.Int("failed_rounds", failures))
			failures = 0
		case err != nil:
			failures++
			if failures == 1 {
				w.log.Error("systemd watchdog: health check failed; WATCHDOG=1 withheld until a check passes "+
					"(systemd restarts taskd if none passes within WatchdogSec)", zap.Error(err))
			}
			return
		}
		w.ping()
	}
	start()
	for {
		select {
		case <-ctx.Done():
			if done != nil {
				timer.Stop()
				<-done // a round stuck on a wedged lock holds the shutdown here; so would the pools
			}
			return
		case err := <-done:
			timer.Stop()
			done, expired = nil, nil
			if !late && ctx.Err() == nil {
				result(err)
			}
		case <-expired:
			late, expired = true, nil
			result(fmt.Errorf("%s: did not finish within %v", *at.Load(), w.timeout))
		case <-tick:
			if done == nil {
				start()
			}
		}
	}
}

// round runs the probes in order and returns the first failure, naming the probe. at
// is set to each probe's name before it runs.
func (w *Watchdog) round(ctx context.Context, at *atomic.Pointer[string]) error {
	for _, p := range w.probes {
		at.Store(&p.Name)
		if err := p.Check(ctx); err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	return nil
}
