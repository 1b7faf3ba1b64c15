package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/pkg/client"
)

func newLogsCmd(opts *options) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [IFACE]",
		Short: "Show the recent stderr lines of the workers of IFACE (or of all interfaces)",
		Long: `logs prints the stderr lines that taskd kept of the workers of IFACE, or of every
interface: the last 1000 lines or 256 KiB per interface, as taskd logged them (cut at
stderr_line_max; lines over stderr_rate are not kept). One line each: TIME WORKER PID LINE,
or a JSON object with -o json. With -f it then prints new lines as they come, until
interrupted.`,
		Args: args(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, a []string) error {
			iface := ""
			if len(a) == 1 {
				iface = a[0]
			}
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			p := &logPrinter{w: opts.stdout, json: opts.output == "json"}
			ctx := cmd.Context()
			if !follow {
				lines, err := c.Logs(ctx, iface)
				if err != nil {
					return err
				}
				for _, l := range lines {
					p.print(l)
				}
				return p.err
			}
			err = c.FollowLogs(ctx, iface, p.print)
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				err = nil // interrupted: the normal end of a follow
			}
			return errors.Join(err, p.err)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "then print new lines as they come, until interrupted")
	return cmd
}

// logPrinter prints log lines as text or JSON lines, keeping the first write error.
type logPrinter struct {
	w    io.Writer
	json bool
	err  error
}

// logTime is how the text output shows a line's time (local time).
const logTime = "2006-01-02 15:04:05.000"

func (p *logPrinter) print(l client.LogLine) {
	if p.err != nil {
		return
	}
	if p.json {
		p.err = json.NewEncoder(p.w).Encode(l)
		return
	}
	if l.Dropped > 0 {
		_, p.err = fmt.Fprintf(p.w, "-- %d lines dropped: taskctl did not read them fast enough --\n", l.Dropped)
		if p.err != nil || l.Worker == "" {
			return
		}
	}
	_, p.err = fmt.Fprintf(p.w, "%s %s %d %s\n", l.Time.Local().Format(logTime), l.Worker, l.PID, l.Line)
}
