package main

import (
	"context"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// statusEvery is how often STATUS= is refreshed while taskd serves.
const statusEvery = 10 * time.Second

// notifier tells systemd (sd_notify) how the daemon is doing: READY=1 with a STATUS= line
// once the server listens, that STATUS= line again every statusEvery, STOPPING=1 when the
// drain begins. Outside systemd ($NOTIFY_SOCKET unset) each notification is a no-op.
// run owns it: the status loop it starts ends when ctx does, and wait waits for it.
type notifier struct {
	log *zap.Logger
	wg  sync.WaitGroup
}

// send sends state (lines of KEY=value) to systemd, best effort: a failure is logged.
func (n *notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("cannot notify systemd", zap.String("state", state), zap.Error(err))
	}
}

// ready sends READY=1 and STATUS=summary(), then refreshes STATUS= every interval until
// ctx ends.
func (n *notifier) ready(ctx context.Context, summary func() string, interval time.Duration) {
	n.send(daemon.SdNotifyReady + "\nSTATUS=" + summary())
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		statusLoop(ctx, interval, func() { n.send("STATUS=" + summary()) })
	}()
}

// wait waits for the status loop, and the watchdog loop if watch started one, to end
// (after their ctx has).
func (n *notifier) wait() { n.wg.Wait() }

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
