package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/pkg/client"
)

// Readiness for orchestrators (a Kubernetes readiness probe, a load balancer's health
// check): `taskctl ready` says whether taskd should get new checkouts now, and `taskctl
// drain --all --wait` (steer.go) takes them away before a stop.

func newReadyCmd(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "ready [IFACE...]",
		Short: "Exit 0 if taskd serves checkouts now, 1 (with the reasons) if it does not",
		Long: `ready asks taskd for its status and exits 0 if it should be given new checkouts now,
for a readiness probe (deploy/kubernetes). It exits 1, printing one reason per line, when:

  - taskd is shutting down (SIGTERM), or does not answer within --timeout;
  - an interface is drained ('taskctl drain', as a preStop hook does before a stop);
  - an interface with min_idle above 0 has no started worker yet (its workers are still
    starting, or fail to start: the reason quotes the start error);
  - an interface with min_idle 0 has no worker and its last start failed.

With IFACE arguments, only those interfaces count (and each must exist); without, every
interface does, except one that a reload removed. ping, not ready, is the liveness check:
ready depends on the workers, ping only on the daemon.`,
		Args: args(cobra.ArbitraryArgs),
		RunE: func(cmd *cobra.Command, ifaces []string) error {
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.DaemonStatus(cmd.Context())
			if err != nil {
				return err
			}
			why := notReady(st, ifaces)
			if opts.output == "json" {
				if err := json.NewEncoder(opts.stdout).Encode(struct {
					Ready   bool     `json:"ready"`
					Reasons []string `json:"reasons"`
				}{len(why) == 0, append([]string{}, why...)}); err != nil {
					return err
				}
			} else if len(why) == 0 {
				if _, err := fmt.Fprintf(opts.stdout, "ready: taskd %s, %s\n", st.Version, readySummary(st, ifaces)); err != nil {
					return err
				}
			}
			if len(why) > 0 {
				return fmt.Errorf("not ready:\n  %s", strings.Join(why, "\n  "))
			}
			return nil
		},
	}
}

// notReady returns why taskd should not be given new checkouts now, one reason per
// problem; none means ready. only, if not empty, limits the check to those interfaces.
func notReady(st client.DaemonStatus, only []string) []string {
	var why []string
	if st.Draining {
		why = append(why, "taskd is shutting down (SIGTERM): it takes no new connection and grants no new checkout")
	}
	for _, name := range only {
		if !slices.ContainsFunc(st.Interfaces, func(is client.InterfaceStatus) bool { return is.Name == name }) {
			why = append(why, fmt.Sprintf("interface %q: taskd does not serve it (it serves %s)", name, ifaceNames(st)))
		}
	}
	for _, is := range st.Interfaces {
		named := slices.Contains(only, is.Name)
		if len(only) > 0 && !named {
			continue
		}
		started := is.Idle + is.Busy
		switch {
		case is.Removed:
			if named {
				why = append(why, fmt.Sprintf("interface %q: a reload removed it; it grants no new checkouts", is.Name))
			}
		case is.Draining:
			why = append(why, fmt.Sprintf("interface %q: drained (taskctl drain): it grants no new checkouts until `taskctl resume %s`", is.Name, is.Name))
		case started == 0 && is.MinIdle > 0:
			msg := fmt.Sprintf("interface %q: no worker has started yet (min_idle %d, %d starting)", is.Name, is.MinIdle, is.Starting)
			if is.LastError != "" {
				msg += "; the last start failed: " + oneLine(is.LastError, 200)
			}
			why = append(why, msg)
		case started == 0 && is.LastError != "":
			why = append(why, fmt.Sprintf("interface %q: no worker, and the last start failed: %s", is.Name, oneLine(is.LastError, 200)))
		}
	}
	return why
}

// readySummary says what a ready taskd has: its interfaces' idle and busy workers.
func readySummary(st client.DaemonStatus, only []string) string {
	var n, idle, busy int
	for _, is := range st.Interfaces {
		if is.Removed || (len(only) > 0 && !slices.Contains(only, is.Name)) {
			continue
		}
		n++
		idle += is.Idle
		busy += is.Busy
	}
	return fmt.Sprintf("%d interface(s), %d idle and %d busy worker(s)", n, idle, busy)
}

// ifaceNames lists the interfaces of st for a message.
func ifaceNames(st client.DaemonStatus) string {
	if len(st.Interfaces) == 0 {
		return "none"
	}
	names := make([]string, len(st.Interfaces))
	for i, is := range st.Interfaces {
		names[i] = is.Name
	}
	return strings.Join(names, ", ")
}

// drainAll drains every interface that taskd serves (except those a reload removed) and
// returns taskd's account of each, one per line, and the names drained.
func drainAll(ctx context.Context, c *client.Client) (string, []string, error) {
	st, err := c.DaemonStatus(ctx)
	if err != nil {
		return "", nil, err
	}
	var msgs, names []string
	for _, is := range st.Interfaces {
		if is.Removed {
			continue
		}
		msg, err := c.Drain(ctx, is.Name)
		if err != nil {
			return strings.Join(msgs, "\n"), names, err
		}
		msgs = append(msgs, msg)
		names = append(names, is.Name)
	}
	if len(names) == 0 {
		return "no interface to drain", nil, nil
	}
	return strings.Join(msgs, "\n"), names, nil
}

// waitReleased polls taskd's status until none of the interfaces names has a checkout
// held or waiting, or until wait has passed, and says which it was. It never fails
// because held checkouts outlast wait: what is held then is left to the shutdown
// (shutdown_grace). poll is how often it asks.
func waitReleased(ctx context.Context, c *client.Client, names []string, wait, poll time.Duration) (string, error) {
	start := time.Now()
	deadline := start.Add(wait)
	for {
		st, err := c.DaemonStatus(ctx)
		if err != nil {
			return "", err
		}
		held := 0
		for _, is := range st.Interfaces {
			if slices.Contains(names, is.Name) {
				held += is.Busy + is.Queued
			}
		}
		if held == 0 {
			return fmt.Sprintf("no checkout held after %v", time.Since(start).Round(time.Millisecond)), nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Sprintf("%d checkout(s) still held after --wait %v: taskd's shutdown_grace bounds them now", held, wait), nil
		}
		t := time.NewTimer(min(poll, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		case <-t.C:
		}
	}
}
