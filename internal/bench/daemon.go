package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/taskd-dev/taskd/internal/taskdproc"
	"github.com/taskd-dev/taskd/pkg/client"
)

// startDaemon starts taskdBin, through taskdproc (the launcher the tests use too), with one
// interface, "echo", served by echoBin. It returns once taskd has reported READY=1 and
// answers Ping on a fresh connection; ready is the time from the start of the process
// until then. Stop the daemon with stopDaemon.
func startDaemon(ctx context.Context, taskdBin, echoBin string, minIdle, maxWorkers int) (*taskdproc.Daemon, time.Duration, error) {
	d, err := taskdproc.Start(ctx, taskdproc.Options{Bin: taskdBin, YAML: fmt.Sprintf(`metrics_listen: ""
interfaces:
  echo:
    command: [%q]
    min_idle: %d
    max_workers: %d
`, echoBin, minIdle, maxWorkers)})
	if err != nil {
		return nil, 0, fmt.Errorf("bench: starting taskd: %w", err)
	}
	err = poll(ctx, d, 30*time.Second, func(ctx context.Context) (bool, error) {
		c, err := client.New(client.Config{Addr: d.Addr})
		if err != nil {
			return false, err
		}
		defer c.Close()
		_, err = c.Ping(ctx)
		return err == nil, nil
	})
	if err != nil {
		return nil, 0, errors.Join(fmt.Errorf("bench: waiting for taskd to answer ping: %w", err), stopDaemon(d))
	}
	return d, time.Since(d.Started), nil
}

// stopDaemon stops d (SIGTERM; SIGKILL after 15s) and removes its directory. It reports an
// exit that was not clean, and workers that outlived taskd (which it kills).
func stopDaemon(d *taskdproc.Daemon) error {
	if err := d.Stop(15 * time.Second); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// waitIdle polls the daemon's status (every millisecond) until interface "echo" has at
// least n idle workers and returns the time since the daemon was started.
func waitIdle(ctx context.Context, d *taskdproc.Daemon, n int, timeout time.Duration) (time.Duration, error) {
	c, err := client.New(client.Config{Addr: d.Addr})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	err = poll(ctx, d, timeout, func(ctx context.Context) (bool, error) {
		st, err := c.DaemonStatus(ctx)
		if err != nil {
			return false, err
		}
		for _, is := range st.Interfaces {
			if is.Name == "echo" && is.Idle >= n {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return 0, fmt.Errorf("bench: waiting for %d idle echo workers: %w", n, err)
	}
	return time.Since(d.Started), nil
}

// poll calls check every millisecond until it reports true, returns an error, the daemon
// exits, or timeout passes.
func poll(ctx context.Context, d *taskdproc.Daemon, timeout time.Duration, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := check(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-d.Exited():
			return fmt.Errorf("taskd exited (%v); its log ends:\n%s", d.ExitErr(), d.LogTail(2000))
		case <-ctx.Done():
			return fmt.Errorf("%w; taskd's log ends:\n%s", ctx.Err(), d.LogTail(2000))
		case <-tick.C:
		}
	}
}
