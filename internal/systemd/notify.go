package systemd

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// StatusEvery is how often taskd refreshes STATUS= while it serves.
const StatusEvery = 10 * time.Second

// Notifier tells systemd (sd_notify) how the daemon is doing: READY=1 with a STATUS= line
// once the server listens, that STATUS= line again every StatusEvery, RELOADING=1 and
// READY=1 around a reload, STOPPING=1 when the drain begins, and WATCHDOG=1 from a
// Watchdog. Outside systemd ($NOTIFY_SOCKET unset)
// each notification is a no-op. Its owner (taskd's main) calls Wait after the context
// given to Ready and Watch has ended: the loops they start end with it. Send is safe for
// concurrent use.
type Notifier struct {
	Log *zap.Logger // where a failed notification is logged; must not be nil
	wg  sync.WaitGroup
}

// send sends state (lines of KEY=value) to systemd, best effort: a failure is logged.
func (n *Notifier) Send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.Log.Warn("cannot notify systemd", zap.String("state", state), zap.Error(err))
	}
}

// ready sends READY=1 and STATUS=summary(), then refreshes STATUS= every interval until
// ctx ends.
func (n *Notifier) Ready(ctx context.Context, summary func() string, interval time.Duration) {
	n.Send(daemon.SdNotifyReady + "\nSTATUS=" + summary())
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		statusLoop(ctx, interval, func() { n.Send("STATUS=" + summary()) })
	}()
}

// Go runs f on a goroutine that Wait waits for; f must return once the context given to
// Ready has ended.
func (n *Notifier) Go(f func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f()
	}()
}

// Reloading tells systemd that a reload has begun (Type=notify-reload): RELOADING=1 with
// MONOTONIC_USEC, the time on CLOCK_MONOTONIC that systemd matches to the reload it asked
// for; a Reloaded must follow. taskd sends it for every reload, whoever asked for it.
func (n *Notifier) Reloading() {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		n.Log.Warn("cannot read CLOCK_MONOTONIC for systemd", zap.Error(err))
	}
	n.Send(fmt.Sprintf("%s\nMONOTONIC_USEC=%d\nSTATUS=reloading the config", daemon.SdNotifyReloading, ts.Nano()/1000))
}

// Reloaded tells systemd that the reload is over (applied or refused): READY=1 with the
// STATUS= summary.
func (n *Notifier) Reloaded(summary string) {
	n.Send(daemon.SdNotifyReady + "\nSTATUS=" + summary)
}

// wait waits for the status loop, and the watchdog loop if watch started one, to end
// (after their ctx has).
func (n *Notifier) Wait() { n.wg.Wait() }

// statusLoop calls refresh every interval until ctx ends.
func statusLoop(ctx context.Context, interval time.Duration, refresh func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			refresh()
		}
	}
}
