package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/pkg/client"
)

func newStatusCmd(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show taskd's interfaces and their workers",
		Args:  args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			st, err := c.DaemonStatus(ctx)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				enc := json.NewEncoder(opts.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return renderStatus(opts.stdout, st)
		},
	}
}

// renderStatus writes st as tables: a summary line, one row per interface (with its
// generation, and "(removed)" after the name of one a reload removed, "(drained)" after
// one that taskctl drain drained), and one row per
// worker (with the generation it was started for).
func renderStatus(w io.Writer, st client.DaemonStatus) error {
	draining := ""
	if st.Draining {
		draining = ", draining"
	}
	fmt.Fprintf(w, "taskd %s, pid %d, up %s%s\n\n", st.Version, st.PID, fmtDur(st.Uptime), draining)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tGEN\tLIVE\tIDLE\tBUSY\tSTARTING\tQUEUED\tCHECKOUTS\tEXITS\tLAST ERROR")
	for _, is := range st.Interfaces {
		name := is.Name
		if is.Removed {
			name += " (removed)"
		}
		if is.Draining {
			name += " (drained)" // taskctl drain: refusing new checkouts until taskctl resume
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", name, fmtGen(is.Generation), is.Live, is.Idle,
			is.Busy, is.Starting, is.Queued, is.Checkouts, orDash(fmtExits(is.Exits)), orDash(oneLine(is.LastError, 60)))
	}
	if len(st.Interfaces) == 0 {
		fmt.Fprintln(tw, "(no interfaces)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := renderAccess(w, st); err != nil {
		return err
	}

	var rows int
	for _, is := range st.Interfaces {
		rows += len(is.Workers)
	}
	if rows == 0 {
		_, err := fmt.Fprintln(w, "\nno workers running")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tWORKER\tPID\tGEN\tSTATE\tCHECKOUTS\tAGE\tMETHOD\tRUNNING FOR")
	for _, is := range st.Interfaces {
		for _, ws := range is.Workers {
			method, running := "-", "-"
			if ws.Method != "" || ws.CallRunning > 0 {
				method = ws.Method
				if method == "" {
					method = "()" // function-style call
				}
				running = fmtDur(ws.CallRunning)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", is.Name, ws.ID, ws.PID, fmtGen(ws.Gen),
				ws.State, ws.Checkouts, fmtDur(ws.Age), method, running)
		}
	}
	return tw.Flush()
}

// renderAccess writes who may use each interface (its allow rule), if any interface has
// one: with none, anyone who can connect may use them all, and nothing is written.
func renderAccess(w io.Writer, st client.DaemonStatus) error {
	if !slices.ContainsFunc(st.Interfaces, func(is client.InterfaceStatus) bool { return is.Allow != nil }) {
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tALLOW")
	for _, is := range st.Interfaces {
		fmt.Fprintf(tw, "%s\t%s\n", is.Name, is.Allow)
	}
	return tw.Flush()
}

// fmtGen formats a generation: "-" for 0, which a taskd older than reload reports.
func fmtGen(gen int) string {
	if gen == 0 {
		return "-"
	}
	return strconv.Itoa(gen)
}

// fmtExits formats worker exits by reason as "crashed=1 max_checkouts=12", most
// frequent first.
func fmtExits(exits map[string]uint64) string {
	reasons := slices.Collect(maps.Keys(exits))
	slices.SortFunc(reasons, func(a, b string) int {
		if c := cmp.Compare(exits[b], exits[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		parts[i] = fmt.Sprintf("%s=%d", r, exits[r])
	}
	return strings.Join(parts, " ")
}

// fmtDur formats d rounded to what a human reads: milliseconds below a second, tenths
// below a minute, whole seconds above.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// oneLine flattens s to one line of at most max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
