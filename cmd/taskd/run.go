package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/taskd-dev/taskd/internal/config"
	"github.com/taskd-dev/taskd/internal/server"
	"github.com/taskd-dev/taskd/internal/systemd"
)

// run runs the daemon until ctx ends or SIGTERM/SIGINT arrives, then drains and returns.
// A second SIGTERM/SIGINT during the drain kills taskd at once (its workers die with it:
// they get a parent-death signal). SIGHUP reloads the config file (read with environ's
// TASKD_* overrides, as at start). SIGQUIT logs every goroutine's stack and keeps running;
// SIGPIPE is ignored.
func run(ctx context.Context, cfg *config.Config, configPath string, environ []string) error {
	// Caught from the start: a SIGHUP that comes before taskd is ready waits for it,
	// instead of killing taskd as its default action would.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	// SIGPIPE, which a write to a closed stderr pipe raises, must not kill taskd: handled
	// (and ignored) here, the write fails with EPIPE instead. (Handled, not ignored:
	// workers start with the default action, as an ignored signal would be inherited.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGQUIT)
	defer signal.Stop(quit)
	logger, level, err := newLogger(cfg.Log, os.Stderr)
	if err != nil {
		return err
	}
	defer logger.Sync() //nolint:errcheck // syncing stderr fails on some systems; nothing to do about it
	n := &systemd.Notifier{Log: logger}
	defer n.Wait() // runs after stop below has ended ctx

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Deferred after stop, so it runs first: returning (say, because server.New failed)
	// must not look like a signal and tell systemd "stopping".
	defer context.AfterFunc(ctx, func() {
		// Restore default signal handling, so that a second signal kills, and tell systemd
		// (best effort, like READY=1) that the drain has begun.
		stop()
		n.Send(daemon.SdNotifyStopping + "\nSTATUS=stopping: draining checkouts for up to shutdown_grace (" + cfg.ShutdownGrace.String() + ")")
	})()

	// Read (and unset) before anything starts: workers and later children never see them.
	wdEvery, err := systemd.WatchdogInterval()
	if err != nil {
		return err
	}
	logger.Info("taskd starting", zap.String("version", version), zap.String("config", configPath),
		zap.Int("pid", os.Getpid()), zap.Strings("listen", cfg.Listen), zap.Int("interfaces", len(cfg.Interfaces)))
	srv, err := server.New(*cfg, logger, version)
	if err != nil {
		return err
	}
	// Sockets systemd passed (socket activation; LISTEN_PID must be ours). Files unsets
	// LISTEN_* and marks the descriptors close-on-exec, so that workers inherit neither.
	srv.Inherit(activation.Files(true))
	srv.SetReloading(server.Reloading{
		Load:  func() (*config.Config, error) { return config.Load(configPath, environ) },
		Level: &level,
		Notify: func(reloading bool) {
			if reloading {
				n.Reloading()
			} else {
				n.Reloaded(srv.Summary())
			}
		},
	})
	return srv.Run(ctx, func() {
		n.Ready(ctx, srv.Summary, systemd.StatusEvery)
		n.Go(func() { reloadOnHUP(ctx, srv, hup, logger) })
		n.Go(func() { dumpOnQUIT(ctx, quit, logger) })
		if wdEvery > 0 {
			logger.Info("systemd watchdog on: WATCHDOG=1 after each round of health checks that passes",
				zap.Duration("every", wdEvery), zap.Duration("watchdog_sec", 2*wdEvery))
			// Stopped when the drain begins (ctx), as systemd stops watching when it
			// hears STOPPING=1 or sends SIGTERM; waited for by n.wait.
			n.Watch(ctx, systemd.NewWatchdog(logger, srv.Probes(), wdEvery, func() { n.Send(daemon.SdNotifyWatchdog) }))
		}
	})
}

// reloadOnHUP reloads the config at each SIGHUP until ctx ends. SIGHUPs that come during a
// reload make one more reload after it.
func reloadOnHUP(ctx context.Context, srv *server.Server, hup <-chan os.Signal, log *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reloading the config")
		// Errors are logged by Reload itself, with what was kept.
		_, _ = srv.Reload(ctx)
	}
}

// dumpOnQUIT logs the stacks of all goroutines at each SIGQUIT, until ctx ends; taskd keeps
// running (Go's own SIGQUIT handling would print them and exit).
func dumpOnQUIT(ctx context.Context, quit <-chan os.Signal, log *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-quit:
		}
		buf := make([]byte, 1<<20)
		for {
			n := runtime.Stack(buf, true)
			if n < len(buf) || len(buf) >= 64<<20 {
				buf = buf[:n]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		log.Warn("SIGQUIT: the stacks of all goroutines; taskd keeps running", zap.Int("goroutines", runtime.NumGoroutine()),
			zap.String("stacks", string(buf)))
	}
}
