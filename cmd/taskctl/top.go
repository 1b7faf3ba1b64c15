package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/pkg/client"
)

func newTopCmd(opts *options) *cobra.Command {
	var (
		interval time.Duration
		n        int
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Watch taskd's interfaces and workers, refreshed every second",
		Long: `top shows, refreshed every --interval, each interface's workers by state, its queue,
its checkouts and calls per second over the last interval and the p50/p99 time of the calls
that ended in it (estimated from taskd's latency histogram), then each worker's state,
running call, RSS and checkouts. On a terminal it redraws the screen; otherwise (or with
TERM=dumb) it prints one snapshot per interval, separated by a blank line. -n stops after
that many snapshots.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 {
				return &usageError{fmt.Errorf("--interval %v: want a positive duration such as 1s", interval)}
			}
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			return watch(cmd.Context(), c, opts.stdout, interval, n, canRedraw(opts.stdout))
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "time between snapshots")
	cmd.Flags().IntVarP(&n, "iterations", "n", 0, "stop after this many snapshots (0: until interrupted)")
	return cmd
}

// canRedraw reports whether w is a terminal that understands ANSI escapes: a terminal
// (isTerminal), with TERM not "dumb".
func canRedraw(w io.Writer) bool {
	return isTerminal(w) && os.Getenv("TERM") != "dumb"
}

// clearScreen moves the cursor home and clears the screen.
const clearScreen = "\x1b[H\x1b[2J"

// watch takes a status snapshot every interval and renders it (n snapshots; 0: until ctx
// ends), redrawing the screen on a terminal, else separating snapshots by a blank line.
// An interrupt is its normal end.
func watch(ctx context.Context, c *client.Client, w io.Writer, interval time.Duration, n int, tty bool) error {
	var prev *client.DaemonStatus
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; n <= 0 || i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		st, err := c.DaemonStatus(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		var buf bytes.Buffer
		if tty {
			buf.WriteString(clearScreen)
		} else if i > 0 {
			buf.WriteByte('\n')
		}
		if err := renderTop(&buf, prev, st); err != nil {
			return err
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		prev = &st
	}
	return nil
}

// renderTop writes one snapshot of cur: a summary line, a row per interface with its
// workers by state, queue, and checkouts and calls per second since prev (the previous
// snapshot; nil for the first: "-"), the median and 99th percentile of the calls that
// ended in between ("-" when none did), and a row per worker. The rates divide the counters'
// growth by the daemon's own uptime between the two snapshots; a daemon that restarted
// meanwhile shows "-".
func renderTop(w io.Writer, prev *client.DaemonStatus, cur client.DaemonStatus) error {
	draining := ""
	if cur.Draining {
		draining = ", draining"
	}
	fmt.Fprintf(w, "taskd %s, pid %d, up %s%s\n\n", cur.Version, cur.PID, fmtDur(cur.Uptime), draining)
	var dt float64
	before := map[string]client.InterfaceStatus{}
	if prev != nil && prev.PID == cur.PID && cur.Uptime > prev.Uptime {
		dt = (cur.Uptime - prev.Uptime).Seconds()
		for _, is := range prev.Interfaces {
			before[is.Name] = is
		}
	}
	rate := func(name string, now uint64, then func(client.InterfaceStatus) uint64) string {
		old, ok := before[name]
		if !ok || dt <= 0 || then(old) > now {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(now-then(old))/dt)
	}

	quantile := func(name string, h *client.LatencyHistogram, q float64) string {
		old, ok := before[name]
		if !ok || dt <= 0 {
			return "-"
		}
		d, ok := h.Quantile(q, old.CallLatency)
		if !ok {
			return "-"
		}
		return fmtLatency(d)
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tLIVE\tIDLE\tBUSY\tSTARTING\tRETIRING\tQUEUED\tCHECKOUTS/S\tCALLS/S\tP50\tP99")
	for _, is := range cur.Interfaces {
		name := is.Name
		if is.Removed {
			name += " (removed)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", name, is.Live, is.Idle, is.Busy, is.Starting,
			is.Retiring, is.Queued,
			rate(is.Name, is.Checkouts, func(o client.InterfaceStatus) uint64 { return o.Checkouts }),
			rate(is.Name, is.Calls, func(o client.InterfaceStatus) uint64 { return o.Calls }),
			quantile(is.Name, is.CallLatency, .5), quantile(is.Name, is.CallLatency, .99))
	}
	if len(cur.Interfaces) == 0 {
		fmt.Fprintln(tw, "(no interfaces)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tWORKER\tPID\tSTATE\tMETHOD\tRUNNING FOR\tRSS\tCHECKOUTS")
	rows := 0
	for _, is := range cur.Interfaces {
		for _, ws := range is.Workers {
			rows++
			method, running := "-", "-"
			if ws.Method != "" || ws.CallRunning > 0 {
				method = ws.Method
				if method == "" {
					method = "()" // function-style call
				}
				running = fmtDur(ws.CallRunning)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\n", is.Name, ws.ID, ws.PID, ws.State, method, running,
				fmtBytes(ws.RSS), ws.Checkouts)
		}
	}
	if rows == 0 {
		fmt.Fprintln(tw, "(no workers running)")
	}
	return tw.Flush()
}

// fmtLatency formats a call time to about three significant digits ("180µs", "2.35ms").
func fmtLatency(d time.Duration) string {
	for unit := time.Microsecond; unit < time.Second; unit *= 10 {
		if d < 1000*unit {
			return d.Round(unit).String()
		}
	}
	return fmtDur(d)
}

// fmtBytes formats a size in binary units with one decimal ("12.3 MiB"); "-" for 0.
func fmtBytes(n int64) string {
	if n <= 0 {
		return "-"
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, [...]string{"KiB", "MiB", "GiB", "TiB"}[i])
}
