package systemd

import (
	"context"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// StatusEvery is how often taskd refreshes STATUS= while it serves.
const StatusEvery = 10 * time.Second

// Notifier tells systemd (sd_notify) how the daemon is doing: READY=1 with a STATUS= line
// once the server listens, that STATUS= line again every StatusEvery, STOPPING=1 when the
// drain begins, and WATCHDOG=1 from a Watchdog. Outside systemd ($NOTIFY_SOCKET unset)
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
