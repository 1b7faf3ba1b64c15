package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/taskd-dev/taskd/pkg/client"
)

func newReloadCmd(opts *options) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make taskd re-read its config file and apply it; print what changed",
		Long: `reload makes taskd re-read the config file it was started with and apply it, as
SIGHUP and 'systemctl reload taskd' do, and prints what changed per interface: added,
removed, resized (pool keys applied in place), access changed (only allow: the new rule
applies to the next request; no worker touched), new generation (new workers took over),
unchanged, or FAILED (the new workers did not start; the old ones keep serving); then the
top-level keys applied live (such as admin or hide_forbidden) and those that need a restart.

taskd answers once the reload is applied, when the new workers are ready, so reload waits
up to ` + client.DefaultReloadTimeout.String() + ` unless --timeout is given. It exits with status 1 if the file is not
valid (nothing changed; taskd's problems are printed) or if an interface failed.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := opts.newClient("")
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			if cmd.Flags().Changed("timeout") {
				// Otherwise Client.Reload's own default applies: --timeout's default is
				// shorter than new workers may take to get ready.
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, opts.timeout)
				defer cancel()
			}
			rep, err := c.Reload(ctx)
			if err != nil {
				return err
			}
			if opts.output == "json" {
				enc := json.NewEncoder(opts.stdout)
				enc.SetIndent("", "  ")
				err = enc.Encode(rep)
			} else {
				err = renderReload(opts.stdout, rep)
			}
			if err != nil {
				return err
			}
			return reloadFailed(rep)
		},
	}
}

// renderReload writes rep as a table, one row per interface, followed by the top-level keys
// applied live and those that need a restart, if any.
func renderReload(w io.Writer, rep client.ReloadReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INTERFACE\tCHANGE\tGEN\tKEYS\tERROR")
	for _, ic := range rep.Interfaces {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ic.Name, changeLabel(ic.Change), fmtGen(ic.Generation),
			orDash(strings.Join(ic.Keys, ",")), orDash(oneLine(ic.Error, 200)))
	}
	if len(rep.Interfaces) == 0 {
		fmt.Fprintln(tw, "(no interfaces)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Live) > 0 {
		if _, err := fmt.Fprintf(w, "applied live: %s\n", strings.Join(rep.Live, ", ")); err != nil {
			return err
		}
	}
	if len(rep.NeedsRestart) > 0 {
		_, err := fmt.Fprintf(w, "needs restart: %s (changed in the file; restart taskd to apply them)\n",
			strings.Join(rep.NeedsRestart, ", "))
		return err
	}
	return nil
}

// changeLabel is how a table shows an InterfaceChange.Change.
func changeLabel(change string) string {
	switch change {
	case client.ChangeNewGeneration:
		return "new generation"
	case client.ChangeAccess:
		return "access changed"
	case client.ChangeFailed:
		return "FAILED"
	}
	return change // added, removed, resized, unchanged, and any taskd adds later
}

// reloadFailed returns an error naming the interfaces of rep whose change failed, or nil.
func reloadFailed(rep client.ReloadReport) error {
	var failed []string
	for _, ic := range rep.Interfaces {
		if ic.Change == client.ChangeFailed {
			failed = append(failed, ic.Name)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	return fmt.Errorf("reload applied, but the new workers of %s did not start (see above), so the old ones keep serving: fix the file and reload again",
		strings.Join(failed, ", "))
}
