package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/pkg/client"
)

// Steering a live daemon: drain, resume, retire, kill and scale. taskd allows them only to
// root and to its own user over its unix socket, and to the peers its admin setting names.

// newSteerCmds returns the commands that steer a live daemon.
func newSteerCmds(opts *options) []*cobra.Command {
	const who = `

Like reload, it is an admin request: taskd allows it only to root and to taskd's own
user, connected over its unix socket (not over TCP). It exits with status 1 if taskd
refuses it, with taskd's reason.`
	drain := steerCmd(opts, "drain IFACE", "Stop granting new checkouts of an interface; held ones finish",
		`drain makes taskd refuse new checkouts of interface IFACE at once (clients get
"interface drained", which they do not retry), and fail the waiting ones; checkouts
already held go on until they are released. Its workers keep running. 'taskctl resume
IFACE' undoes it; 'taskctl status' marks a drained interface.

--all drains every interface (IFACE is then left out): before a planned stop, such as a
Kubernetes preStop hook, so that clients move their new checkouts to other daemons while
this one still answers. --wait D then waits until the drained interfaces have no checkout
held, at most D, and exits 0 either way (what is still held is left to shutdown_grace).`+who,
		func(ctx context.Context, c *client.Client, a []string) (string, error) { return c.Drain(ctx, a[0]) })
	drainFlags(opts, drain)
	resume := steerCmd(opts, "resume IFACE", "Grant checkouts of a drained interface again",
		`resume undoes 'taskctl drain IFACE': taskd grants checkouts of IFACE again.`+who,
		func(ctx context.Context, c *client.Client, a []string) (string, error) { return c.Resume(ctx, a[0]) })
	retire := steerCmd(opts, "retire WORKER", "Retire a worker once its checkout ends, and replace it",
		`retire retires one worker, named by its id (such as echo-3) or its pid as 'taskctl
status' shows them: an idle worker now, a busy one when its checkout is released (the
checkout is not disturbed). The pool starts a replacement first if it needs one.`+who,
		func(ctx context.Context, c *client.Client, a []string) (string, error) {
			return c.RetireWorker(ctx, a[0])
		})
	kill := steerCmd(opts, "kill WORKER", "Kill a worker now; its checkout loses its worker",
		`kill kills one worker now (SIGKILL to its process group), named as for retire. If it
is checked out, its holder's calls fail with "worker lost". The pool replaces it as needed.`+who,
		func(ctx context.Context, c *client.Client, a []string) (string, error) {
			return c.KillWorker(ctx, a[0])
		})

	var minIdle, maxWorkers int
	scale := steerCmd(opts, "scale IFACE --min N --max M", "Set an interface's min_idle and max_workers until the next reload",
		`scale sets interface IFACE's min_idle (--min) and max_workers (--max) live. It lasts
until the next reload, which applies the config file's values again, even if the file
did not change. --max must be at least 1, and --min between 0 and --max. A lower
max_workers retires idle workers above it now and busy ones when released.`+who,
		func(ctx context.Context, c *client.Client, a []string) (string, error) {
			return c.Scale(ctx, a[0], minIdle, maxWorkers)
		})
	scale.Flags().IntVar(&minIdle, "min", 0, "min_idle: warm workers to keep ready")
	scale.Flags().IntVar(&maxWorkers, "max", 0, "max_workers: cap on the interface's live workers")
	_ = scale.MarkFlagRequired("min")
	_ = scale.MarkFlagRequired("max")
	scale.PreRunE = func(*cobra.Command, []string) error {
		if maxWorkers < 1 || minIdle < 0 || minIdle > maxWorkers {
			return &usageError{fmt.Errorf("--min %d --max %d: want --max at least 1 and --min between 0 and --max", minIdle, maxWorkers)}
		}
		return nil
	}
	return []*cobra.Command{drain, resume, retire, kill, scale}
}

// steerCmd makes a command that takes one argument, sends one admin request with do, and
// prints taskd's account of it (-o json: {"op": ..., "target": ..., "message": ...}).
func steerCmd(opts *options, use, short, long string, do func(context.Context, *client.Client, []string) (string, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			msg, err := do(cmd.Context(), c, a)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				enc := json.NewEncoder(opts.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Op      string `json:"op"`
					Target  string `json:"target"`
					Message string `json:"message"`
				}{cmd.Name(), a[0], msg})
			}
			_, err = fmt.Fprintln(opts.stdout, msg)
			return err
		},
	}
}

// drainFlags gives drain its --all and --wait flags: with --all it drains every interface
// (drainAll), and with --wait it waits for the drained interfaces' held checkouts
// (waitReleased) before it prints taskd's accounts.
func drainFlags(opts *options, drain *cobra.Command) {
	var all bool
	var wait time.Duration
	drain.Use = "drain IFACE | drain --all [--wait D]"
	drain.Flags().BoolVar(&all, "all", false, "drain every interface (no IFACE)")
	drain.Flags().DurationVar(&wait, "wait", 0, "then wait until no checkout of the drained interfaces is held, at most this long")
	drain.Args = args(func(cmd *cobra.Command, a []string) error {
		if all {
			if len(a) > 0 {
				return fmt.Errorf("--all drains every interface: give no IFACE (got %q)", a)
			}
			return nil
		}
		return cobra.ExactArgs(1)(cmd, a)
	})
	drain.PreRunE = func(*cobra.Command, []string) error {
		if wait < 0 {
			return &usageError{fmt.Errorf("--wait %v: want a duration of 0 or more, such as 20s", wait)}
		}
		return nil
	}
	one := drain.RunE
	drain.RunE = func(cmd *cobra.Command, a []string) error {
		if !all && wait == 0 {
			return one(cmd, a)
		}
		c, err := opts.newClient("")
		if err != nil {
			return err
		}
		defer c.Close()
		ctx := cmd.Context()
		var msg string
		var names []string
		if all {
			msg, names, err = drainAll(ctx, c)
		} else {
			msg, err = c.Drain(ctx, a[0])
			names = a
		}
		if err != nil {
			if msg != "" {
				fmt.Fprintln(opts.stdout, msg) // the interfaces drained before the failure
			}
			return err
		}
		if wait > 0 && len(names) > 0 {
			waited, err := waitReleased(ctx, c, names, wait, drainPoll)
			if err != nil {
				return err
			}
			msg += "\n" + waited
		}
		target := "all"
		if !all {
			target = a[0]
		}
		if opts.output == "json" {
			enc := json.NewEncoder(opts.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(struct {
				Op      string `json:"op"`
				Target  string `json:"target"`
				Message string `json:"message"`
			}{"drain", target, msg})
		}
		_, err = fmt.Fprintln(opts.stdout, msg)
		return err
	}
}

// drainPoll is how often drain --wait asks taskd whether the held checkouts are released.
const drainPoll = 200 * time.Millisecond
